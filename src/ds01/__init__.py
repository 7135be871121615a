"""ds01: fair, safe sharing of a multi-GPU server through one privileged daemon."""

__version__ = "0.1.0"
