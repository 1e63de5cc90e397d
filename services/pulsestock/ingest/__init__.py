"""ingest: The front door: validation, normalisation and dedup of what happens outside."""
