"""Command handlers, policies and projections of inventory_sync."""
