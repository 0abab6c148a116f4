"""1×1 (pointwise) convolutions as matrix multiplies, fast on every backend.

Why this exists: most of an MBConv network's multiply-adds are in its 1×1 expand and project
convolutions. XLA:CPU runs `lax.conv_general_dilated` with a 1×1 kernel as a library convolution
whose backward pass is slow: in B0's train step at batch 32, 224 px, the kernel gradient of
blocks_1's expand convolution (a reduction over 32·112·112 positions, 16 -> 96 channels) took
416 ms and its input gradient 309 ms, about 3-4 GFLOP/s against 317 GFLOP/s for a plain matmul on
the same 2 cores. The same convolution written as a reshape to (positions, channels) and a
`lax.dot_general` runs forward and backward as matrix multiplies: 36.8 ms forward and 80 ms for the
gradient against 72.8 ms and 271 ms, and B0's train step went from 9.0 to 13.1 images/s (inference
52 to 81). On a GPU the explicit matmul is slower (H200, B0 bfloat16 train at batch 256: 4,243
against 6,970 images/s with XLA's convolution), so `implementation='auto'` picks per backend:

  'xla'     `lax.conv_general_dilated` for every convolution (what `nn.Conv` does).
  'matmul'  1×1 kernels with stride 1, no dilation, no feature groups and no explicit padding (a
            1×1 kernel pads nothing under 'SAME' or 'VALID'), in channels-last layout,
            as reshape + `lax.dot_general` + reshape; and convolutions whose patch has at most
            MAX_PATCH_SIZE values (kh·kw·in_channels: the 3×3 stems over RGB) as patches + matmul:
            pad, k² strided slices concatenated on the channel axis, `lax.dot_general`. B0's stem
            (32×224×224×3 -> 32 channels, stride 2) took 49 ms forward with XLA:CPU's convolution and
            33 ms as patches; the train step went from 13.1 to 13.6 images/s and inference from 84
            to 91. ResNet's 7×7 stem (147 values) was 2.3× slower forward as patches, so it and every
            other convolution stay with `lax.conv_general_dilated`.
  'auto'    'matmul' when `jax.default_backend() == 'cpu'`, else 'xla'.

Both give the same parameters and the same numbers up to float rounding (tested); the choice is a
model attribute (`pointwise_implementation`) and a config field, like the depthwise one.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from effnet_jax.models.depthwise import window_tap

IMPLEMENTATIONS = ("auto", "xla", "matmul")
MAX_PATCH_SIZE = 32  # kh·kw·in_channels up to which 'matmul' runs a convolution as patches + matmul


def resolve_implementation(implementation: str = "auto") -> str:
    """Maps 'auto' to 'matmul' on the CPU backend and 'xla' elsewhere; validates the name."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown pointwise implementation {implementation!r}; "
                         f"expected one of {IMPLEMENTATIONS}.")
    if implementation == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return implementation


def _is_channels_last(dimension_numbers, ndim: int) -> bool:
    """True for NH..C inputs, H..IO kernels and NH..C outputs (what `nn.Conv` passes)."""
    if dimension_numbers is None:
        return False
    spatial = tuple(range(1, ndim - 1))
    lhs, rhs, out = dimension_numbers
    return (tuple(lhs) == (0, ndim - 1, *spatial) and tuple(out) == (0, ndim - 1, *spatial)
            and tuple(rhs) == (ndim - 1, ndim - 2, *range(ndim - 2)))


def _conv(inputs, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
          dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
          preferred_element_type=None, *, implementation: str):
    """`lax.conv_general_dilated`'s signature; 1×1 and small-patch channels-last convolutions as a matmul."""
    if (resolve_implementation(implementation) == "matmul"
            and all(rate == 1 for rate in (lhs_dilation or ()))
            and all(rate == 1 for rate in (rhs_dilation or ()))
            and feature_group_count == 1 and batch_group_count == 1
            and _is_channels_last(dimension_numbers, inputs.ndim)):
        pads = () if isinstance(padding, str) else [pad for pair in padding for pad in pair]
        if (all(size == 1 for size in kernel.shape[:-2]) and all(stride == 1 for stride in window_strides)
                and not any(pads)):
            return _matmul_over_channels(inputs, kernel, precision, preferred_element_type)
        if inputs.ndim == 4 and math.prod(kernel.shape[:-1]) <= MAX_PATCH_SIZE and min(pads, default=0) >= 0:
            patches = _patches(inputs, kernel.shape[:2], window_strides, padding)
            return _matmul_over_channels(patches, kernel, precision, preferred_element_type)
    return lax.conv_general_dilated(
        inputs, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)


def _matmul_over_channels(inputs, kernel, precision, preferred_element_type):
    """inputs (..., K) times kernel (..., out) flattened to (K, out): a 1×1 convolution's matmul."""
    out_channels = kernel.shape[-1]
    outputs = lax.dot_general(inputs.reshape(-1, inputs.shape[-1]), kernel.reshape(-1, out_channels),
                              (((1,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=preferred_element_type)
    return outputs.reshape(*inputs.shape[:-1], out_channels)


def _patches(inputs, window, window_strides, padding):
    """(N, oh, ow, kh·kw·C) patches of an NHWC array, in the (i, j, c) order of an HWIO kernel."""
    (_, height, width, _), (kh, kw) = inputs.shape, window
    if isinstance(padding, str):
        padding = lax.padtype_to_pads((height, width), window, window_strides, padding)
    padded = jnp.pad(inputs, [(0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)])
    out_hw = tuple((size - k) // stride + 1 for size, k, stride in zip(padded.shape[1:3], window, window_strides))
    return jnp.concatenate([window_tap(padded, i, j, out_hw, tuple(window_strides))
                            for i in range(kh) for j in range(kw)], axis=-1)


def conv_general_dilated(implementation: str = "auto"):
    """A drop-in for `lax.conv_general_dilated` (`nn.Conv(conv_general_dilated=...)`)."""
    resolve_implementation(implementation)  # validate early, at model construction
    return functools.partial(_conv, implementation=implementation)
