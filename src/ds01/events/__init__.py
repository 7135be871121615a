"""The structured event log (JSONL), written only by ds01d."""
