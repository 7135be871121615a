"""The ds01 command line: a thin client of ds01d."""
