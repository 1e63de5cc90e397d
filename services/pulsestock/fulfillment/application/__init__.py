"""Command handlers, policies and projections of fulfillment."""
