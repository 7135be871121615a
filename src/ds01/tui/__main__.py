"""``python -m ds01.tui``: ``ds01-dashboard`` (what ``ds01 dashboard`` hands over to)."""

from ds01.tui.main import main

main()
