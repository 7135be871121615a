"""The hub door's two words, shared by ds01d and its clients (a JupyterHub's spawner).

A hub identity (``hub:`` in resource-limits.yaml) names the user it acts for in the
``ON_BEHALF_HEADER`` request header; a server it creates for that user may carry the hub's
environment variables, those whose names start with one of ``HUB_ENV_PREFIXES`` only.
"""

from __future__ import annotations

ON_BEHALF_HEADER = "X-Ds01-On-Behalf-Of"
HUB_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_")

__all__ = ["HUB_ENV_PREFIXES", "ON_BEHALF_HEADER"]
