"""The small shared kernel: database, blob store. No feature logic lives here."""
