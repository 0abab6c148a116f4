"""Building blocks shared by every model family: convolutions, batch norm, SE, drop-path, activations.

Everything follows the tensorflow/tpu reference (reference-spec §1.6–§1.10):
- every convolution pads TF-'SAME' (Flax's ``padding='SAME'`` computes exactly TF's rule, §1.10);
- kernels start from an *untruncated* normal with std sqrt(2 / fan_out), where fan_out counts the
  output channels of the TF kernel layout; for a depthwise kernel that is k·k, not k·k·C (§1.9);
- the classifier starts uniform in ±1/sqrt(num_classes); biases start at zero;
- batch norm uses momentum 0.99 and epsilon 1e-3 (TF convention, same as Flax's).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax.models import pointwise
from effnet_jax.models.depthwise import depthwise_conv2d

Array = jax.Array
Dtype = Any

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def conv_kernel_init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    """Normal(0, sqrt(2 / fan_out)), fan_out = kh·kw·out_channels, untruncated (reference §1.9)."""
    fan_out = math.prod(shape[:-2]) * shape[-1]
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_out)


def depthwise_kernel_init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    """Normal(0, sqrt(2 / (kh·kw))): TF's depthwise kernel is (k, k, C, 1), so its fan_out is k·k.

    Flax stores the kernel as (k, k, 1, C), where a stock variance-scaling initialiser would count k·k·C.
    """
    fan_out = math.prod(shape[:-2])
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_out)


def dense_kernel_init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    """Uniform(-1/sqrt(out), +1/sqrt(out)) for the classifier (reference §1.9; out = num_classes)."""
    limit = 1.0 / math.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def relu6(x: Array) -> Array:
    return jnp.clip(x, 0, 6)


def hard_sigmoid(x: Array) -> Array:
    """relu6(x + 3) / 6, MobileNetV3's cheap sigmoid."""
    return relu6(x + 3.0) / 6.0


def hard_swish(x: Array) -> Array:
    return x * hard_sigmoid(x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "swish": nn.swish,
    "relu": nn.relu,
    "relu6": relu6,
    "hard_swish": hard_swish,
    "sigmoid": nn.sigmoid,
    "hard_sigmoid": hard_sigmoid,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[name]


# A convolution as the reference builds it: TF-SAME padding, no bias, fan-out normal init.
Conv = functools.partial(nn.Conv, padding="SAME", use_bias=False, kernel_init=conv_kernel_init)


class DepthwiseConv(nn.Module):
    """k×k depthwise convolution (depth multiplier 1), TF-SAME padded, no bias.

    ``implementation`` picks how it is computed ('auto', 'xla', 'shifted'; see
    ``effnet_jax.models.depthwise``); every choice gives the same numbers and the same parameters.
    """

    kernel_size: int
    strides: int = 1
    implementation: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", depthwise_kernel_init, (self.kernel_size, self.kernel_size, 1, channels), self.param_dtype
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return depthwise_conv2d(x, kernel, (self.strides, self.strides), implementation=self.implementation)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (reference §1.6 step 3).

    Global mean over H, W -> 1×1 conv with bias to ``hidden_features`` -> activation -> 1×1 conv with bias
    back to the input's channels -> gate -> rescale the input. The caller sizes ``hidden_features`` (for
    MBConv: from the block's *input* filters, not its expanded width).
    """

    hidden_features: int
    conv: Callable[..., nn.Module]
    activation: Callable[[Array], Array] = nn.swish
    gate: Callable[[Array], Array] = nn.sigmoid

    @nn.compact
    def __call__(self, x: Array) -> Array:
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
        squeezed = self.conv(self.hidden_features, (1, 1), use_bias=True, name="reduce")(squeezed)
        squeezed = self.activation(squeezed)
        squeezed = self.conv(x.shape[-1], (1, 1), use_bias=True, name="expand")(squeezed)
        return x * self.gate(squeezed).astype(x.dtype)


def drop_path(x: Array, survival_prob: float, rng: Array) -> Array:
    """Stochastic depth on a residual branch (reference §1.7).

    Each example's branch is kept with probability ``survival_prob`` (mask = floor(p + U[0, 1))) and
    divided by ``survival_prob`` so that its expectation is unchanged; used at train time only.
    """
    keep_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = jnp.floor(survival_prob + jax.random.uniform(rng, keep_shape, dtype=jnp.float32))
    return x / jnp.asarray(survival_prob, x.dtype) * keep.astype(x.dtype)


class DropPath(nn.Module):
    """``drop_path`` as a module; draws from the 'dropout' RNG stream and is the identity at eval."""

    survival_prob: float | Array  # an Array when it is a scanned input (EfficientNet(scan_blocks=True))

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        if deterministic or (isinstance(self.survival_prob, (int, float)) and self.survival_prob >= 1.0):
            return x
        return drop_path(x, self.survival_prob, self.make_rng("dropout"))


def as_image_batch(images, dtype: Dtype) -> Array:
    """``images`` as a ``dtype`` array after checking it is a batch of RGB images.

    Every network starts with this, so that a wrong input fails here, naming the problem and the fix,
    and not as a shape error from the stem convolution deep inside Flax or XLA. Accepts real-valued
    [batch, height, width, 3] arrays (float or integer pixels; the caller normalises them).
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        images = jnp.asarray(images)
    shape, kind = tuple(images.shape), jnp.dtype(images.dtype)
    expected = "expected images of shape [batch, height, width, 3]"
    if len(shape) != 4:
        hint = " For a single image use images[None]." if len(shape) == 3 else ""
        raise ValueError(f"{expected}, got shape {shape} ({len(shape)} dimensions).{hint}")
    if shape[-1] != 3:
        if shape[1] == 3:
            hint = " This looks channels-first (NCHW): transpose with images.transpose(0, 2, 3, 1)."
        elif shape[-1] == 1:
            hint = " Grayscale: repeat the channel, e.g. jnp.repeat(images, 3, axis=-1)."
        elif shape[-1] == 4:
            hint = " RGBA: drop the alpha channel, images[..., :3]."
        else:
            hint = ""
        raise ValueError(f"{expected}, got {shape[-1]} channels (shape {shape}).{hint}")
    if 0 in shape:
        raise ValueError(f"{expected}, got an empty array (shape {shape}).")
    if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
        raise ValueError(f"expected real-valued images (float or integer pixels), got dtype {kind}.")
    return jnp.asarray(images, dtype)


def injected_layers(module: nn.Module, train: bool, *, with_depthwise: bool = True):
    """(conv, depthwise, norm) factories sharing the module's dtype and batch-norm settings.

    Every network injects these into its blocks, so that all of them share one padding rule, one
    initialiser, one compute dtype and one batch-norm grouping (``bn_axis_name``). ``module`` needs the
    fields ``dtype``, ``param_dtype``, ``bn_momentum``, ``bn_epsilon``, ``bn_axis_name``,
    ``bn_axis_index_groups``, ``pointwise_implementation`` (and ``depthwise_implementation`` with
    ``with_depthwise``).
    """
    conv = functools.partial(Conv, dtype=module.dtype, param_dtype=module.param_dtype,
                             conv_general_dilated=pointwise.conv_general_dilated(module.pointwise_implementation))
    depthwise = None
    if with_depthwise:
        depthwise = functools.partial(DepthwiseConv, implementation=module.depthwise_implementation,
                                      dtype=module.dtype, param_dtype=module.param_dtype)
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=module.bn_momentum,
        epsilon=module.bn_epsilon,
        axis_name=module.bn_axis_name,
        axis_index_groups=module.bn_axis_index_groups,
        dtype=module.dtype,
        param_dtype=module.param_dtype,
    )
    return conv, depthwise, norm


def classifier(module: nn.Module, x: Array, train: bool, name: str = "classifier") -> Array:
    """Dropout (train only) -> Dense with bias -> float32 logits."""
    x = nn.Dropout(module.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(module.num_classes, kernel_init=dense_kernel_init, dtype=module.dtype,
                 param_dtype=module.param_dtype, name=name)(x)
    return jnp.asarray(x, jnp.float32)
