"""Command handlers, policies and projections of signal."""
