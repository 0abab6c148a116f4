"""MobileNetV1, V2 and V3 (Large, Small), built as Keras applications builds them.

Read each family like its paper's architecture table: ``V1_STAGES`` (Howard et al. 2017, Table 1),
``V2_STAGES`` (Sandler et al. 2018, Table 2: t, c, n, s) and ``V3_LARGE_BLOCKS`` / ``V3_SMALL_BLOCKS``
(Howard et al. 2019, Tables 1 and 2). Channel counts, where SE sits and the head follow
``keras.applications`` exactly, so that Keras weights convert one to one
(``effnet_jax.convert.keras_other``) and the parameter counts are Keras':

    mobilenet-v1 4,231,976   mobilenet-v2 3,504,872   mobilenet-v3-large 5,483,032
    mobilenet-v3-small 2,542,856   (trainable parameters at width 1, 1000 classes)

V2 and V3 blocks are the EfficientNet ``MBConv`` (expand -> depthwise -> [SE] -> linear project ->
skip) with other activations; V1's depthwise-separable block has an activation after its pointwise
conv, which MBConv's linear bottleneck does not, so it is its own small module.

Scaling (paper Table 3; ``create_model(name, width=..., depth=..., resolution=...)``):
  - width: V1 truncates ``int(filters * width)`` (Keras' α); V2 and V3 round to a multiple of 8
    (``scaling.round_filters``, never more than 10% down), as their reference code does. The V2/V3 head
    widths (1280 / 1024) only grow (width > 1), never shrink, as in Keras. V3's 16-channel stem is fixed.
  - depth: each stage's repeats become ``ceil(depth * repeats)``; the added blocks copy the stage's
    last block (stride 1). A V3 "stage" is a run of blocks with the same output width.
  - resolution: the input side; the networks accept any size.

Padding: every conv is TF-SAME. Keras pads stride-2 depthwise convs explicitly (V2/V3: ``correct_pad``,
V1: always (0, 1)) and convolves 'valid'; on even input sides (every side of a 2^k-multiple input such
as 224, 64 or 32) that is exactly TF-SAME. Only V1 on odd sides differs from Keras (which then
samples a different grid).

Inputs: all three expect images scaled to [-1, 1] (Keras ``mobilenet*.preprocess_input``, 'tf' mode).
Keras' MobileNetV3 does that scaling inside the model unless built with ``include_preprocessing=False``;
these modules never do.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax import scaling
from effnet_jax.models import layers
from effnet_jax.models.efficientnet import MBConv

Array = jax.Array

# Batch norm: Keras uses epsilon 1e-3 everywhere (= ours) and momentum 0.99 (V1) or 0.999 (V2/V3).
# Momentum only matters when training; every family here defaults to the reference's 0.99.


def repeat_stages(stages: Sequence[Sequence[Any]], depth: float) -> list[tuple[int, int, Any]]:
    """[(stage, repeat, stage_row)] with each stage's repeats scaled to ``ceil(depth * repeats)``.

    ``stages`` is a list of stages, each a list of per-block rows; blocks added by depth scaling copy
    the stage's last row (the caller gives them stride 1 because ``repeat > 0``).
    """
    layout = []
    for stage_index, rows in enumerate(stages):
        count = scaling.round_repeats(len(rows), depth)
        for repeat in range(count):
            layout.append((stage_index + 1, repeat, rows[min(repeat, len(rows) - 1)]))
    return layout


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block after scaling, for every MobileNet: what to build and what the summary prints.

    ``expanded_filters`` is the depthwise width (V1: = in_filters); ``se_filters`` 0 means no SE.
    """

    stage: int  # 1-based
    in_filters: int
    out_filters: int
    expanded_filters: int
    kernel_size: int
    strides: int
    se_filters: int = 0
    activation: str = "relu6"

    @property
    def expand_ratio(self) -> float:
        return self.expanded_filters / self.in_filters

    @property
    def has_skip(self) -> bool:
        return self.strides == 1 and self.in_filters == self.out_filters


class _MobileNetBase(nn.Module):
    """Fields every MobileNet shares (the same ones ``EfficientNet`` has, so the trainer can pass them)."""

    blocks: Sequence[BlockSpec] = ()
    stem_filters: int = 32
    head_filters: int = 1280
    num_classes: int = 1000
    dropout_rate: float = 0.0
    resolution: int = 224
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_momentum: float = layers.BN_MOMENTUM
    bn_epsilon: float = layers.BN_EPSILON
    bn_axis_name: str | None = None
    bn_axis_index_groups: Any = None
    depthwise_implementation: str = "auto"
    pointwise_implementation: str = "auto"
    include_head: bool = True

    def stage_rows(self, resolution: int) -> list[dict]:
        """Rows for ``effnet_jax.summary``: stem, one per stage, head."""
        side = math.ceil(resolution / 2)
        rows = [dict(stage="stem", block="Conv3x3", kernel=3, stride=2, expansion=None,
                     channels=self.stem_filters, repeats=1, output_size=side)]
        for stage, group in itertools.groupby(self.blocks, key=lambda spec: spec.stage):
            group = list(group)
            first = group[0]
            side = math.ceil(side / first.strides)
            rows.append(dict(stage=str(stage), block=self.block_label(first), kernel=first.kernel_size,
                             stride=first.strides, expansion=round(first.expand_ratio, 2),
                             channels=first.out_filters, repeats=len(group), output_size=side))
        if self.include_head:
            rows.append(dict(stage="head", block=self.head_label, kernel=1, stride=1, expansion=None,
                             channels=self.head_filters, repeats=1, output_size=side))
        return rows

    head_label = "Conv1x1+pool+FC"

    def block_label(self, spec: BlockSpec) -> str:
        return f"MBConv{spec.expand_ratio:g}" + ("+SE" if spec.se_filters else "")


# --------------------------------------------------------------------------------------------------
# MobileNetV1

# (output filters, stride of the stage's first block, repeats), after a 32-channel 3x3 stride-2 stem.
V1_STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2))


def v1_blocks(width: float, depth: float) -> tuple[BlockSpec, ...]:
    """Depthwise-separable blocks of MobileNetV1 at width α (Keras: ``int(filters * alpha)``)."""
    stages = [[(filters, stride)] * repeats for filters, stride, repeats in V1_STAGES]
    in_filters = int(32 * width)
    specs = []
    for stage, repeat, (filters, stride) in repeat_stages(stages, depth):
        out_filters = int(filters * width)
        specs.append(BlockSpec(stage, in_filters, out_filters, in_filters, 3, stride if repeat == 0 else 1))
        in_filters = out_filters
    return tuple(specs)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN -> act (MobileNetV1; no skip)."""

    out_filters: int
    strides: int
    conv: Callable[..., nn.Module]
    depthwise: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    activation: Callable[[Array], Array] = layers.relu6

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = self.depthwise(3, self.strides, name="depthwise_conv")(x)
        x = self.activation(self.norm(name="bn1")(x))
        x = self.conv(self.out_filters, (1, 1), name="pointwise_conv")(x)
        return self.activation(self.norm(name="bn2")(x))


class MobileNetV1(_MobileNetBase):
    """MobileNetV1: 3x3 stem -> 13 depthwise-separable blocks -> pool -> dropout -> classifier.

    Keras' classifier is a 1x1 conv with bias on the pooled features, i.e. a Dense layer.
    """

    dropout_rate: float = 1e-3  # Keras' default
    head_label = "pool+FC"

    def block_label(self, spec: BlockSpec) -> str:
        return "DWConv3x3+Conv1x1"

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        conv, depthwise, norm = layers.injected_layers(self, train)
        x = layers.as_image_batch(images, self.dtype)
        x = conv(self.stem_filters, (3, 3), strides=(2, 2), name="stem_conv")(x)
        x = layers.relu6(norm(name="stem_bn")(x))
        for index, spec in enumerate(self.blocks):
            x = SeparableBlock(spec.out_filters, spec.strides, conv, depthwise, norm,
                               name=f"blocks_{index}")(x, train)
        if not self.include_head:
            return x
        return layers.classifier(self, jnp.mean(x, axis=(1, 2)), train)


def mobilenet_v1(width: float = 1.0, depth: float = 1.0, **module_kwargs) -> MobileNetV1:
    return MobileNetV1(blocks=v1_blocks(width, depth), stem_filters=int(32 * width),
                       head_filters=int(1024 * width), **module_kwargs)


# --------------------------------------------------------------------------------------------------
# MobileNetV2

# Sandler et al. Table 2: (expansion t, output channels c, repeats n, first stride s); stem 32, head 1280.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))


def _v2_filters(filters: int, width: float) -> int:
    """Keras: ``_make_divisible(int(filters * alpha), 8)``; the int() first differs from
    ``round_filters`` only for fractional products."""
    return scaling.round_filters(int(filters * width), 1.0)


def v2_blocks(width: float, depth: float) -> tuple[BlockSpec, ...]:
    stages = [[(t, c, s)] * n for t, c, n, s in V2_STAGES]
    in_filters = scaling.round_filters(32, width)
    specs = []
    for stage, repeat, (expansion, filters, stride) in repeat_stages(stages, depth):
        out_filters = _v2_filters(filters, width)
        specs.append(BlockSpec(stage, in_filters, out_filters, in_filters * expansion, 3,
                               stride if repeat == 0 else 1))
        in_filters = out_filters
    return tuple(specs)


class MobileNetV2(_MobileNetBase):
    """MobileNetV2: stem -> inverted residuals (``MBConv``, ReLU6, no SE) -> 1x1 head -> pool -> classifier.

    Keras has no dropout; TF-slim trains with 0.2 (keep 0.8), our default.
    """

    dropout_rate: float = 0.2

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        conv, depthwise, norm = layers.injected_layers(self, train)
        x = layers.as_image_batch(images, self.dtype)
        x = conv(self.stem_filters, (3, 3), strides=(2, 2), name="stem_conv")(x)
        x = layers.relu6(norm(name="stem_bn")(x))
        for index, spec in enumerate(self.blocks):
            x = MBConv(
                out_filters=spec.out_filters,
                expand_ratio=spec.expand_ratio,
                expanded_filters=spec.expanded_filters,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                se_filters=0,
                survival_prob=1.0 if spec.has_skip else None,
                conv=conv,
                depthwise=depthwise,
                norm=norm,
                activation=layers.relu6,
                name=f"blocks_{index}",
            )(x, train)
        if not self.include_head:
            return x
        x = conv(self.head_filters, (1, 1), name="head_conv")(x)
        x = layers.relu6(norm(name="head_bn")(x))
        return layers.classifier(self, jnp.mean(x, axis=(1, 2)), train)


def mobilenet_v2(width: float = 1.0, depth: float = 1.0, **module_kwargs) -> MobileNetV2:
    head = scaling.round_filters(1280, width) if width > 1.0 else 1280
    return MobileNetV2(blocks=v2_blocks(width, depth), stem_filters=scaling.round_filters(32, width),
                       head_filters=head, **module_kwargs)


# --------------------------------------------------------------------------------------------------
# MobileNetV3

# Howard et al. 2019 Tables 1 and 2 as Keras writes them:
# (kernel, expansion of the block's input, output channels, SE, activation, stride).
V3_LARGE_BLOCKS = (
    (3, 1, 16, False, "relu", 1),
    (3, 4, 24, False, "relu", 2),
    (3, 3, 24, False, "relu", 1),
    (5, 3, 40, True, "relu", 2),
    (5, 3, 40, True, "relu", 1),
    (5, 3, 40, True, "relu", 1),
    (3, 6, 80, False, "hard_swish", 2),
    (3, 2.5, 80, False, "hard_swish", 1),
    (3, 2.3, 80, False, "hard_swish", 1),
    (3, 2.3, 80, False, "hard_swish", 1),
    (3, 6, 112, True, "hard_swish", 1),
    (3, 6, 112, True, "hard_swish", 1),
    (5, 6, 160, True, "hard_swish", 2),
    (5, 6, 160, True, "hard_swish", 1),
    (5, 6, 160, True, "hard_swish", 1),
)
V3_SMALL_BLOCKS = (
    (3, 1, 16, True, "relu", 2),
    (3, 72 / 16, 24, False, "relu", 2),
    (3, 88 / 24, 24, False, "relu", 1),
    (5, 4, 40, True, "hard_swish", 2),
    (5, 6, 40, True, "hard_swish", 1),
    (5, 6, 40, True, "hard_swish", 1),
    (5, 3, 48, True, "hard_swish", 1),
    (5, 3, 48, True, "hard_swish", 1),
    (5, 6, 96, True, "hard_swish", 2),
    (5, 6, 96, True, "hard_swish", 1),
    (5, 6, 96, True, "hard_swish", 1),
)
V3_STEM_FILTERS = 16
V3_HEAD_FILTERS = {"large": 1280, "small": 1024}
V3_SE_RATIO = 0.25


def v3_blocks(table: Sequence[tuple], width: float, depth: float) -> tuple[BlockSpec, ...]:
    """Keras' V3 layout: expansion and SE widths are ``_depth(...)`` (multiple of 8) of the block's
    *actual* input; the SE hidden width is a quarter of the expanded width (not of the input)."""
    stages = [list(rows) for _, rows in itertools.groupby(table, key=lambda row: row[2])]
    in_filters = V3_STEM_FILTERS
    specs = []
    for stage, repeat, (kernel, expansion, filters, has_se, activation, stride) in repeat_stages(stages, depth):
        out_filters = scaling.round_filters(filters, width)
        expanded = scaling.round_filters(in_filters * expansion, 1.0)
        se_filters = scaling.round_filters(expanded * V3_SE_RATIO, 1.0) if has_se else 0
        specs.append(BlockSpec(stage, in_filters, out_filters, expanded, kernel, stride if repeat == 0 else 1,
                               se_filters, activation))
        in_filters = out_filters
    return tuple(specs)


class MobileNetV3(_MobileNetBase):
    """MobileNetV3: 16-ch hard-swish stem -> MBConv blocks (ReLU / hard-swish, SE with hard-sigmoid gate)
    -> 1x1 conv (6x the last block's width) -> BN -> act -> pool -> Dense(1280 | 1024) + hard-swish ->
    dropout -> classifier. Keras' two post-pool 1x1 convs with bias are Dense layers here."""

    head_features: int = 1280
    dropout_rate: float = 0.2
    head_label = "Conv1x1+pool+FC+FC"

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        conv, depthwise, norm = layers.injected_layers(self, train)
        x = layers.as_image_batch(images, self.dtype)
        x = conv(self.stem_filters, (3, 3), strides=(2, 2), name="stem_conv")(x)
        x = layers.hard_swish(norm(name="stem_bn")(x))
        for index, spec in enumerate(self.blocks):
            x = MBConv(
                out_filters=spec.out_filters,
                expand_ratio=spec.expand_ratio,
                expanded_filters=spec.expanded_filters,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                se_filters=spec.se_filters,
                survival_prob=1.0 if spec.has_skip else None,
                conv=conv,
                depthwise=depthwise,
                norm=norm,
                activation=layers.get_activation(spec.activation),
                se_gate=layers.hard_sigmoid,
                se_activation=nn.relu,
                name=f"blocks_{index}",
            )(x, train)
        if not self.include_head:
            return x
        x = conv(self.head_filters, (1, 1), name="head_conv")(x)
        x = layers.hard_swish(norm(name="head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.head_features, kernel_init=layers.dense_kernel_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="head_dense")(x)
        return layers.classifier(self, layers.hard_swish(x), train)


def mobilenet_v3(size: str, width: float = 1.0, depth: float = 1.0, **module_kwargs) -> MobileNetV3:
    """``size`` is 'large' or 'small'."""
    if size not in V3_HEAD_FILTERS:
        raise ValueError(f"MobileNetV3 size must be 'large' or 'small', got {size!r}.")
    blocks = v3_blocks(V3_LARGE_BLOCKS if size == "large" else V3_SMALL_BLOCKS, width, depth)
    head_features = V3_HEAD_FILTERS[size]
    if width > 1.0:
        head_features = scaling.round_filters(head_features, width)
    return MobileNetV3(blocks=blocks, stem_filters=V3_STEM_FILTERS,
                       head_filters=scaling.round_filters(blocks[-1].out_filters * 6, 1.0),
                       head_features=head_features, **module_kwargs)
