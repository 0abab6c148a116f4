"""Test-wide setup, done before JAX is imported anywhere (which is why it lives here).

- 8 simulated CPU devices, so sharding code runs as on a TPU slice, and fast compiles (xla_env.py).
- One persistent compilation cache for the whole run, shared by pytest-xdist workers and the
  subprocesses that tests start (they inherit the environment): XLA:CPU compiles slowly, and many
  tests build the same programs (a resumed run, a killed-and-restarted run, both processes of a
  multi-process run).
"""
import os
import tempfile

from xla_env import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="effnet_jax_test_jit_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
