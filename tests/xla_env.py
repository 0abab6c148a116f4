"""XLA_FLAGS of every test process: the suite's (tests/conftest.py) and the subprocesses it starts.

XLA:CPU runs without LLVM optimisations here: compiling is what the tests spend their time on, and
LLVM's optimiser is most of a compile (the mini network's init, mostly threefry kernels, takes 9.5 s
at the default level and 1.8 s at level 0 on a 2-core machine), while the inputs are too small for
the slower code to matter.
"""


def xla_flags(device_count: int) -> str:
  """XLA_FLAGS for a test process with `device_count` simulated CPU devices."""
  return f'--xla_force_host_platform_device_count={device_count} --xla_backend_optimization_level=0'
