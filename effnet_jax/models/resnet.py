"""ResNet-50/101/152/200 with bottleneck blocks (He et al. 2016), the paper's Table 3 baseline.

Two knobs decide which of the common ResNets this is:
  - ``stride_on``: '3x3' (default, "ResNet v1.5" as torchvision and NVIDIA train it: a stage's first
    block downsamples in its 3x3 conv, 4.1 G multiply-adds at 224, the paper's 4.1B) or '1x1' (the
    original paper and ``keras.applications.ResNet50``: downsampling in the first 1x1 conv, 3.9 G).
  - ``conv_bias``: False (default, torchvision: 25,557,032 trainable parameters for ResNet-50) or True
    (Keras: every conv has a bias although a batch norm follows, 25,583,592).
Keras' ResNet50 is ``create_model('resnet-50', stride_on='1x1', conv_bias=True, bn_epsilon=1.001e-5)``;
``effnet_jax.convert.keras_other`` builds it that way.

Padding is symmetric (PyTorch style, and what Keras' explicit ZeroPadding does): 3 pixels around the
7x7 stem, 1 around every 3x3 conv and around the 3x3 stride-2 max pool. TF-SAME would shift the
sampling grid of the strided layers by one pixel on even inputs.

Scaling (paper Table 3): width multiplies every channel count (stem, bottleneck and output widths),
rounded with ``scaling.round_filters`` (multiples of 8; exact at widths 1 and 2); depth makes each
stage's block count ``ceil(depth * blocks)``; resolution is the input side.

Inputs: torchvision-trained weights expect ImageNet mean/std normalisation; Keras' expect 'caffe'
preprocessing (BGR, mean subtracted, not scaled) done outside the model.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax import scaling
from effnet_jax.models import layers

Array = jax.Array

# Bottleneck width (output = 4x) per stage, and blocks per stage for each depth.
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
BOTTLENECK_EXPANSION = 4
STEM_FILTERS = 64
# torchvision / TF official ResNet batch norm: epsilon 1e-5, momentum 0.9 (TF convention).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One bottleneck block after scaling."""

    stage: int  # 1..4 (Keras names them conv2..conv5)
    in_filters: int
    bottleneck_filters: int
    out_filters: int
    strides: int

    @property
    def has_projection(self) -> bool:
        """A 1x1 conv + BN shortcut where the identity does not fit (each stage's first block)."""
        return self.strides != 1 or self.in_filters != self.out_filters

    @property
    def kernel_size(self) -> int:
        return 3


def build_blocks(stage_blocks: Sequence[int], width: float = 1.0, depth: float = 1.0) -> tuple[BlockSpec, ...]:
    in_filters = scaling.round_filters(STEM_FILTERS, width)
    specs = []
    for stage, (filters, blocks) in enumerate(zip(STAGE_WIDTHS, stage_blocks), start=1):
        bottleneck = scaling.round_filters(filters, width)
        out_filters = scaling.round_filters(filters * BOTTLENECK_EXPANSION, width)
        for repeat in range(scaling.round_repeats(blocks, depth)):
            strides = 2 if stage > 1 and repeat == 0 else 1
            specs.append(BlockSpec(stage, in_filters, bottleneck, out_filters, strides))
            in_filters = out_filters
    return tuple(specs)


def _symmetric(pixels: int):
    return ((pixels, pixels), (pixels, pixels))


class Bottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (4x) -> BN, plus the (projected) input, -> ReLU."""

    bottleneck_filters: int
    out_filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    stride_on: str = "3x3"

    @nn.compact
    def __call__(self, inputs: Array, train: bool = False) -> Array:
        stride_1x1 = (self.strides,) * 2 if self.stride_on == "1x1" else (1, 1)
        stride_3x3 = (self.strides,) * 2 if self.stride_on == "3x3" else (1, 1)
        shortcut = inputs
        if self.strides != 1 or inputs.shape[-1] != self.out_filters:
            shortcut = self.conv(self.out_filters, (1, 1), strides=(self.strides,) * 2, padding="VALID",
                                 name="shortcut_conv")(inputs)
            shortcut = self.norm(name="shortcut_bn")(shortcut)
        x = self.conv(self.bottleneck_filters, (1, 1), strides=stride_1x1, padding="VALID", name="conv1")(inputs)
        x = nn.relu(self.norm(name="bn1")(x))
        x = self.conv(self.bottleneck_filters, (3, 3), strides=stride_3x3, padding=_symmetric(1), name="conv2")(x)
        x = nn.relu(self.norm(name="bn2")(x))
        x = self.conv(self.out_filters, (1, 1), padding="VALID", name="conv3")(x)
        x = self.norm(name="bn3")(x)
        return nn.relu(x + shortcut)


class ResNet(nn.Module):
    """ResNet: 7x7/2 stem -> BN -> ReLU -> 3x3/2 max pool -> bottleneck stages -> pool -> classifier.

    Attributes mirror ``EfficientNet``'s (dtype, batch-norm grouping, ``include_head``) so that the
    trainer drives every family the same way; see the module docstring for ``stride_on``/``conv_bias``.
    """

    blocks: Sequence[BlockSpec] = ()
    stem_filters: int = STEM_FILTERS
    num_classes: int = 1000
    dropout_rate: float = 0.0
    resolution: int = 224
    stride_on: str = "3x3"
    conv_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_momentum: float = BN_MOMENTUM
    bn_epsilon: float = BN_EPSILON
    bn_axis_name: str | None = None
    bn_axis_index_groups: Any = None
    remat: bool = False
    pointwise_implementation: str = "auto"  # see effnet_jax.models.pointwise
    include_head: bool = True

    @property
    def head_filters(self) -> int:
        return self.blocks[-1].out_filters

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        if self.stride_on not in ("3x3", "1x1"):
            raise ValueError(f"stride_on must be '3x3' (v1.5) or '1x1' (v1, Keras), got {self.stride_on!r}.")
        conv, _, norm = layers.injected_layers(self, train, with_depthwise=False)
        conv = functools.partial(conv, use_bias=self.conv_bias)
        block_module = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        x = layers.as_image_batch(images, self.dtype)
        x = conv(self.stem_filters, (7, 7), strides=(2, 2), padding=_symmetric(3), name="stem_conv")(x)
        x = nn.relu(norm(name="stem_bn")(x))
        # Padding with zeros after a ReLU is padding with -inf: no padded value can win the max.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_symmetric(1))
        for index, spec in enumerate(self.blocks):
            x = block_module(spec.bottleneck_filters, spec.out_filters, spec.strides, conv, norm,
                             self.stride_on, name=f"blocks_{index}")(x, train)
        if not self.include_head:
            return x
        return layers.classifier(self, jnp.mean(x, axis=(1, 2)), train)

    def stage_rows(self, resolution: int) -> list[dict]:
        """Rows for ``effnet_jax.summary``: stem (conv + pool), one per stage, head."""
        side = math.ceil(resolution / 4)
        rows = [dict(stage="stem", block="Conv7x7+MaxPool", kernel=7, stride=4, expansion=None,
                     channels=self.stem_filters, repeats=1, output_size=side)]
        for stage, group in itertools.groupby(self.blocks, key=lambda spec: spec.stage):
            group = list(group)
            side = math.ceil(side / group[0].strides)
            rows.append(dict(stage=str(stage), block=f"Bottleneck{group[0].bottleneck_filters}",
                             kernel=3, stride=group[0].strides, expansion=BOTTLENECK_EXPANSION,
                             channels=group[0].out_filters, repeats=len(group), output_size=side))
        if self.include_head:
            rows.append(dict(stage="head", block="pool+FC", kernel=1, stride=1, expansion=None,
                             channels=self.head_filters, repeats=1, output_size=side))
        return rows


def resnet(layers_count: int = 50, width: float = 1.0, depth: float = 1.0, **module_kwargs) -> ResNet:
    """ResNet-{50,101,152,200} at a width and depth multiplier."""
    if layers_count not in STAGE_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {layers_count}.")
    return ResNet(blocks=build_blocks(STAGE_BLOCKS[layers_count], width, depth),
                  stem_filters=scaling.round_filters(STEM_FILTERS, width), **module_kwargs)
