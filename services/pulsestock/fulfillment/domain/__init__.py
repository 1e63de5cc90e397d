"""Pure rules and events of fulfillment: no I/O, no clock (`now` comes in with each command)."""
