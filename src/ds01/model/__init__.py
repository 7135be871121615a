"""Plain data that several packages share: devices and inventories, MIG steps, quotas,
units, names and the ds01 labels on containers and images.

The bottom layer: it imports nothing from ds01 but ``errors``, so config, core, gpu,
runtime and the daemon can all use its types without importing one another.
"""
