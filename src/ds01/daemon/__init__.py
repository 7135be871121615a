"""ds01d: the one privileged process, serving the API on a unix socket."""
