"""Pure rules and events of inventory_sync: no I/O, no clock (`now` comes in with each command)."""
