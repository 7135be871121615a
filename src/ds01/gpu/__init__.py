"""GPU inventory: devices (whole GPUs and MIG instances) from NVML or a simulation."""
