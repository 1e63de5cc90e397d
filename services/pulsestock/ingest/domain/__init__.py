"""Pure rules and events of ingest: no I/O, no clock (`now` comes in with each command)."""
