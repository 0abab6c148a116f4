"""Test-wide setup: simulate 8 CPU devices so sharding code runs as on a TPU slice.

The flag must be set before JAX is imported anywhere, which is why it lives here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
