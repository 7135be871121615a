"""``ds01-dashboard``: a live terminal view of the machine (``GET /v1/overview``).

- ``frame``: the pure frame model, an overview (the API's JSON) plus the view state (sort,
  user filter) turned into titled tables of text cells; also the plain-text frame of
  ``--once``. Standard library only.
- ``app``: the textual application that shows frames, refreshing in a worker thread.
- ``main``: the command (``ds01-dashboard``), which imports textual only when it runs the
  live view; its arguments are the CLI's (``ds01.cli.dashboard``), which hands ``ds01
  dashboard`` over to it.
- ``entry``: the console script, which prints ``ds01-dashboard --help`` from the kept pages
  (``ds01.cli.entry``) without loading ``main``. So this package imports nothing itself.
"""
