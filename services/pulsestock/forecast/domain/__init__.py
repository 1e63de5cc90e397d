"""Pure rules and events of forecast: no I/O, no clock (`now` comes in with each command)."""
