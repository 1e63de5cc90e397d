"""Command handlers, policies and projections of ingest."""
