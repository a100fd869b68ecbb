"""The dead-letter topic: reading it back, the ledger that keeps it exactly once, and replay."""
