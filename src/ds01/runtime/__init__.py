"""Adapters to the outside world: the Docker engine and the kernel."""
