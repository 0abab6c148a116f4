"""Tests for effnet_jax.models.depthwise: the 'shifted' and 'xla' paths agree, and both are TF 'SAME'."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnet_jax.models import depthwise
from effnet_jax.models.depthwise import depthwise_conv2d

# Jitted so each call compiles once; eager mode would compile every slice/pad/multiply separately.
conv = jax.jit(depthwise_conv2d, static_argnames=("strides", "implementation"))


def _random(shape, seed, dtype=jnp.float32):
  # numpy, not jax.random: compiling a jax.random.normal per shape costs seconds on CPU.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _assert_close(actual, expected, rtol):
  """Max abs error within rtol of the largest magnitude (sums of products: elementwise rtol is meaningless)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


def _numpy_depthwise_tf_same(x, kernel, stride):
  """Loop reference: TF SAME with pad_before = total // 2, extra pixel bottom/right."""
  n, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  oh, ow = math.ceil(h / stride), math.ceil(w / stride)
  top = max((oh - 1) * stride + kh - h, 0) // 2
  left = max((ow - 1) * stride + kw - w, 0) // 2
  out = np.zeros((n, oh, ow, c), np.float64)
  for o in range(oh):
    for p in range(ow):
      for i in range(kh):
        for j in range(kw):
          y, z = o * stride + i - top, p * stride + j - left
          if 0 <= y < h and 0 <= z < w:
            out[:, o, p, :] += x[:, y, z, :] * kernel[i, j, 0, :]
  return out


CASES = [(k, s, hw) for k in (3, 5) for s in (1, 2) for hw in ((8, 8), (7, 7), (15, 15), (9, 6))]


@pytest.mark.parametrize("kernel_size,stride,hw", CASES)
def test_shifted_matches_xla_forward_and_gradients(kernel_size, stride, hw):
  channels = 4 + (kernel_size + stride + hw[0]) % 13  # 4..16
  x = _random((2, *hw, channels), 0)
  kernel = _random((kernel_size, kernel_size, 1, channels), 1)
  cotangent = _random((2, -(-hw[0] // stride), -(-hw[1] // stride), channels), 2)

  @functools.partial(jax.jit, static_argnums=2)  # one compile per case; eager would compile per op
  def forward_and_grads(x, kernel, implementation):
    def loss(x, kernel):
      y = depthwise_conv2d(x, kernel, (stride, stride), implementation=implementation)
      return jnp.vdot(y, cotangent), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, kernel)
    return (y, *grads)

  outputs = {impl: forward_and_grads(x, kernel, impl) for impl in ("xla", "shifted")}
  assert outputs["shifted"][0].shape == cotangent.shape
  for name, a, b in zip(("output", "d_inputs", "d_kernel"), outputs["shifted"], outputs["xla"]):
    assert a.dtype == b.dtype == jnp.float32, name
    _assert_close(a, b, rtol=1e-5)


@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 2)])
def test_bfloat16_forward_matches_xla(kernel_size, stride):
  x = _random((2, 9, 6, 8), 0, jnp.bfloat16)
  kernel = _random((kernel_size, kernel_size, 1, 8), 1, jnp.bfloat16)
  shifted = conv(x, kernel, stride, implementation="shifted")
  xla = conv(x, kernel, stride, implementation="xla")
  assert shifted.dtype == xla.dtype == jnp.bfloat16
  _assert_close(shifted, xla, rtol=2e-2)
  exact = _numpy_depthwise_tf_same(np.asarray(x, np.float64), np.asarray(kernel, np.float64), stride)
  _assert_close(shifted, exact, rtol=1e-2)  # f32 accumulation: only the final rounding to bf16


@pytest.mark.parametrize("implementation", ["shifted", "xla"])
@pytest.mark.parametrize("hw,kernel_size,stride", [
    ((6, 6), 3, 2),   # even input, stride 2: pads (0, 1)
    ((8, 7), 5, 2),   # even rows pad (1, 2), odd columns pad (2, 2)
    ((5, 6), 3, 1),
    ((7, 6), 4, 2),   # even kernel
    ((6, 5), 2, 1),
])
def test_tf_same_alignment_against_numpy(implementation, hw, kernel_size, stride):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, *hw, 3)).astype(np.float32)
  kernel = rng.standard_normal((kernel_size, kernel_size, 1, 3)).astype(np.float32)
  y = conv(jnp.asarray(x), jnp.asarray(kernel), stride, implementation=implementation)
  assert y.shape == (1, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride), 3)
  _assert_close(y, _numpy_depthwise_tf_same(x, kernel, stride), rtol=1e-6)


def test_same_padding():
  assert depthwise.same_padding(8, 3, 2) == (0, 1)
  assert depthwise.same_padding(8, 5, 2) == (1, 2)
  assert depthwise.same_padding(15, 3, 2) == (1, 1)
  assert depthwise.same_padding(65, 5, 2) == (2, 2)
  assert depthwise.same_padding(7, 3, 1) == (1, 1)
  assert depthwise.same_padding(8, 1, 2) == (0, 0)


def test_matches_flax_depthwise_conv_layout():
  import flax.linen as nn
  x = _random((2, 7, 8, 6), 0)
  layer = nn.Conv(features=6, kernel_size=(3, 3), strides=2, padding="SAME", feature_group_count=6,
                  use_bias=False)
  kernel = _random((3, 3, 1, 6), 1)
  assert jax.eval_shape(layer.init, jax.random.key(0), x)["params"]["kernel"].shape == kernel.shape
  expected = jax.jit(layer.apply)({"params": {"kernel": kernel}}, x)
  _assert_close(conv(x, kernel, 2, implementation="shifted"), expected, 1e-5)


def test_jit_grad_vmap_and_second_order():
  x, kernel = _random((2, 7, 6, 5), 0), _random((3, 3, 1, 5), 1)

  def loss(x, kernel, implementation):
    return jnp.sum(jnp.tanh(depthwise_conv2d(x, kernel, (2, 2), implementation=implementation)))

  grads = {impl: jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, kernel, impl)
           for impl in ("shifted", "xla")}
  for a, b in zip(grads["shifted"], grads["xla"]):
    _assert_close(a, b, 1e-5)

  batched = jax.jit(jax.vmap(lambda x: depthwise_conv2d(x, kernel, 2, implementation="shifted")))(x[:, None])
  _assert_close(batched[:, 0], conv(x, kernel, 2, implementation="xla"), 1e-5)

  # Reverse-over-reverse works through the custom_vjp (its backward is plain JAX).
  def grad_norm(x, implementation):
    return jnp.sum(jax.grad(loss, argnums=1)(x, kernel, implementation) ** 2)
  second = jax.jit(jax.grad(grad_norm), static_argnums=1)
  _assert_close(second(x, "shifted"), second(x, "xla"), 1e-4)


def test_auto_picks_by_backend(monkeypatch):
  assert depthwise.resolve_implementation("auto") == "shifted"  # tests run on CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert depthwise.resolve_implementation("auto") == "xla"
  assert depthwise.resolve_implementation("shifted") == "shifted"


def test_rejects_bad_arguments():
  x, kernel = jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 1, 3))
  assert set(depthwise.IMPLEMENTATIONS) == {"auto", "xla", "shifted"}
  with pytest.raises(ValueError, match="Unknown depthwise implementation 'cudnn'"):
    depthwise_conv2d(x, kernel, implementation="cudnn")
  with pytest.raises(ValueError, match="kernel"):
    depthwise_conv2d(x, jnp.zeros((3, 3, 3, 1)))
