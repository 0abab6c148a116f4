"""Times depthwise_conv2d forward and value_and_grad for each implementation on the current backend.

  python experiments/bench_depthwise.py            # xla and shifted (custom_vjp)
  python experiments/bench_depthwise.py --autodiff # also shifted forward under plain autodiff

Prints the median wall time in ms over 5 runs after one warm-up (compile) run. The gradient is taken
w.r.t. inputs and kernel of sum(y * r) with a fixed random r (a reduction consumes y, as batch norm does).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from effnet_jax.models import depthwise

# (name, (N, H, W, C), kernel size, stride): EfficientNet-B0 depthwise layers at batch 32.
SHAPES = [
    ("56x56x144 k3 s1", (32, 56, 56, 144), 3, 1),
    ("112x112x96 k3 s2", (32, 112, 112, 96), 3, 2),
    ("28x28x240 k5 s1", (32, 28, 28, 240), 5, 1),
]


def _median_ms(fn, *args, runs=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--autodiff", action="store_true", help="also time shifted without custom_vjp")
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()

  impls = {name: (lambda x, w, s, name=name: depthwise.depthwise_conv2d(x, w, s, implementation=name))
           for name in ("xla", "shifted")}
  if args.autodiff:
    impls["shifted-autodiff"] = lambda x, w, s: depthwise._shifted_forward(x, w, (s, s))

  print(f"backend={jax.default_backend()} dtype={args.dtype}")
  print(f"{'shape':<20}{'implementation':<18}{'forward ms':>12}{'grad ms':>12}")
  for label, shape, k, stride in SHAPES:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], shape, args.dtype)
    w = jax.random.normal(keys[1], (k, k, 1, shape[-1]), args.dtype)
    for name, impl in impls.items():
      forward = jax.jit(lambda x, w, impl=impl: impl(x, w, stride))
      r = jax.random.normal(keys[2], forward(x, w).shape, args.dtype)
      loss = lambda x, w, r, impl=impl: jnp.sum(impl(x, w, stride) * r, dtype=jnp.float32)
      grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
      print(f"{label:<20}{name:<18}{_median_ms(forward, x, w):>12.1f}{_median_ms(grad, x, w, r):>12.1f}",
            flush=True)


if __name__ == "__main__":
  main()
