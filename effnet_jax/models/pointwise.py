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
            as reshape + `lax.dot_general` + reshape; every other convolution (the stem's 3×3, a
            ResNet's 3×3 and 7×7) unchanged, through `lax.conv_general_dilated`.
  'auto'    'matmul' when `jax.default_backend() == 'cpu'`, else 'xla'.

Both give the same parameters and the same numbers up to float rounding (tested); the choice is a
model attribute (`pointwise_implementation`) and a config field, like the depthwise one.
"""
from __future__ import annotations

import functools

import jax
from jax import lax

IMPLEMENTATIONS = ("auto", "xla", "matmul")


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
    """`lax.conv_general_dilated`'s signature; 1×1 channels-last convolutions as a matmul."""
    pointwise = (
        resolve_implementation(implementation) == "matmul"
        and all(size == 1 for size in kernel.shape[:-2])
        and all(stride == 1 for stride in window_strides)
        and all(rate == 1 for rate in (lhs_dilation or ()))
        and all(rate == 1 for rate in (rhs_dilation or ()))
        and feature_group_count == 1 and batch_group_count == 1
        and (isinstance(padding, str) or all(tuple(pad) == (0, 0) for pad in padding))
        and _is_channels_last(dimension_numbers, inputs.ndim)
    )
    if not pointwise:
        return lax.conv_general_dilated(
            inputs, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)
    in_channels, out_channels = kernel.shape[-2], kernel.shape[-1]
    outputs = lax.dot_general(inputs.reshape(-1, in_channels), kernel.reshape(in_channels, out_channels),
                              (((1,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=preferred_element_type)
    return outputs.reshape(*inputs.shape[:-1], out_channels)


def conv_general_dilated(implementation: str = "auto"):
    """A drop-in for `lax.conv_general_dilated` (`nn.Conv(conv_general_dilated=...)`)."""
    resolve_implementation(implementation)  # validate early, at model construction
    return functools.partial(_conv, implementation=implementation)
