"""JupyterHub's servers as ds01 containers: ``Ds01Spawner`` (``pip install ds01[jupyterhub]``;
``c.JupyterHub.spawner_class = "ds01"``). ``options`` and ``form`` are pure and need no
JupyterHub; the spawner is imported only when asked for."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Ds01Spawner":
        from ds01.jupyterhub.spawner import Ds01Spawner

        return Ds01Spawner
    raise AttributeError(name)


__all__ = ["Ds01Spawner"]
