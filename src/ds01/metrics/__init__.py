"""The Prometheus exporter of ds01d (see docs/admin.md, "Metrics").

- ``activity``: counters of what happened (lifecycle actions, queue waits), fed by the
  event log;
- ``snapshot``: everything one scrape reports, gathered in one pass (one Docker list call,
  one GPU backend call, a few SQLite reads);
- ``collector``: the metric families built from one snapshot (pure);
- ``exporter``: the HTTP endpoint (``--metrics-listen``, default ``127.0.0.1:9101``).
"""
