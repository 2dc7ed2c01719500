"""GPUs: local ones through NVML and a spec database (resources/gpus.toml). No Qt."""
