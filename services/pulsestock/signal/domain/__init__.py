"""Pure rules and events of signal: no I/O, no clock (`now` comes in with each command)."""
