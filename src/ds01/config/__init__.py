"""Configuration files as typed models: loading, validation and per-user resolution."""
