"""Pure rules of collect: no I/O, no clock (`now` comes in with each call)."""
