"""Command handlers, policies and projections of forecast."""
