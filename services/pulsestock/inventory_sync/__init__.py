"""inventory-sync: The event-sourced stock ledger and per-channel sellable quantities."""
