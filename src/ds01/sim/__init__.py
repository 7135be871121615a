"""Workload simulation: replay a trace through the real GPU queue on a virtual clock."""
