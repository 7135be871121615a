"""Pure decisions: validation, quotas and placement. No I/O in this package."""
