"""The audit log, written only by ds01d: hash-chained JSONL, rotated and compressed.

- ``chain``: line format, hashing and file layout shared by the writer and the checker
  (standard library only, so the CLI can import it);
- ``log``: ``EventLog``, the writer used by the daemon;
- ``redact``: keeps secrets out of the details of an event;
- ``verify``: ``verify(log_dir)``, the check behind ``ds01 audit verify``.

Nothing is imported here, so that importing one of them costs only what it needs.
"""
