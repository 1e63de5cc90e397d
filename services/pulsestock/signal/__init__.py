"""signal: Heat of every video, live session and SKU; pulse detection."""
