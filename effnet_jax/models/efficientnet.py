"""EfficientNet (Tan & Le, 2019) exactly as the tensorflow/tpu reference builds it.

Read this file like the paper's Table 1: ``B0_BLOCKS`` are the seven stages of the NAS-found
baseline, ``VARIANTS`` the published (width, depth, resolution, dropout) of every named model,
``build_blocks`` applies width/depth scaling and the stochastic-depth schedule, and ``EfficientNet``
is stem -> MBConv blocks -> head. References to "§" are to ../shared/reference-spec.md.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax import scaling
from effnet_jax.models import layers

Array = jax.Array

# §1.2: the seven stages of EfficientNet-B0, in the reference's block-string format (§1.1).
B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEFAULT_SURVIVAL_PROB = 0.8


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the reference's parameter tables (§1.3)."""

    width: float
    depth: float
    resolution: int
    dropout_rate: float
    family: str = "efficientnet"  # 'efficientnet' (swish, SE) or 'lite' (relu6, no SE, fixed stem/head)


# §1.3: efficientnet_builder.efficientnet_params and efficientnet_lite_builder.efficientnet_lite_params.
VARIANTS: dict[str, Variant] = {
    "efficientnet-b0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": Variant(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": Variant(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": Variant(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": Variant(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": Variant(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": Variant(2.0, 3.1, 600, 0.5),
    "efficientnet-b8": Variant(2.2, 3.6, 672, 0.5),
    "efficientnet-l2": Variant(4.3, 5.3, 800, 0.5),
    "efficientnet-lite0": Variant(1.0, 1.0, 224, 0.2, "lite"),
    "efficientnet-lite1": Variant(1.0, 1.1, 240, 0.2, "lite"),
    "efficientnet-lite2": Variant(1.1, 1.2, 260, 0.3, "lite"),
    "efficientnet-lite3": Variant(1.2, 1.4, 280, 0.3, "lite"),
    "efficientnet-lite4": Variant(1.4, 1.8, 300, 0.3, "lite"),
}


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage, decoded from a block string (§1.1). Filters are before width scaling."""

    num_repeat: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None = None
    id_skip: bool = True
    conv_type: int = 0


_TOKEN = re.compile(r"^([a-z]+)(\d.*)$")


def decode_block_string(block_string: str) -> BlockArgs:
    """Parses e.g. ``'r2_k3_s22_e6_i16_o24_se0.25'`` (§1.1). Fails loudly on anything malformed."""
    options: dict[str, str] = {}
    id_skip = True
    for token in block_string.split("_"):
        if token == "noskip":
            id_skip = False
            continue
        match = _TOKEN.match(token)
        if not match:
            raise ValueError(f"Block string {block_string!r}: cannot read token {token!r} (expected e.g. 'k3').")
        options[match.group(1)] = match.group(2)
    for key in ("r", "k", "s", "e", "i", "o"):
        if key not in options:
            raise ValueError(f"Block string {block_string!r} lacks the '{key}' token.")
    strides = options["s"]
    if len(strides) != 2 or strides[0] != strides[1]:
        raise ValueError(f"Block string {block_string!r}: strides must be two equal digits like 's22'.")
    conv_type = int(options.get("c", 0))
    if conv_type != 0 or "f" in options or "cc" in options or "d" in options:
        raise ValueError(
            f"Block string {block_string!r} asks for a block type effnet_jax does not build "
            "(fused, CondConv or space-to-depth); only MBConv (c0) is supported."
        )
    return BlockArgs(
        num_repeat=int(options["r"]),
        kernel_size=int(options["k"]),
        strides=int(strides[0]),
        expand_ratio=int(options["e"]),
        input_filters=int(options["i"]),
        output_filters=int(options["o"]),
        se_ratio=float(options["se"]) if "se" in options else None,
        id_skip=id_skip,
        conv_type=conv_type,
    )


def encode_block_string(args: BlockArgs) -> str:
    """The inverse of ``decode_block_string``."""
    tokens = [
        f"r{args.num_repeat}",
        f"k{args.kernel_size}",
        f"s{args.strides}{args.strides}",
        f"e{args.expand_ratio}",
        f"i{args.input_filters}",
        f"o{args.output_filters}",
    ]
    if args.se_ratio is not None:
        tokens.append(f"se{args.se_ratio:g}")
    if not args.id_skip:
        tokens.append("noskip")
    return "_".join(tokens)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block after scaling: everything needed to build it and to describe it."""

    stage: int  # 1-based, as in the paper's Table 1
    in_filters: int
    out_filters: int
    expand_ratio: int
    kernel_size: int
    strides: int
    se_filters: int  # SE hidden width; 0 = no SE
    survival_prob: float | None  # stochastic depth keep probability; None where the block has no skip

    @property
    def has_skip(self) -> bool:
        return self.survival_prob is not None


def build_blocks(
    block_strings: Sequence[str],
    width: float,
    depth: float,
    *,
    use_se: bool = True,
    fix_head_stem: bool = False,
    survival_prob: float | None = DEFAULT_SURVIVAL_PROB,
    id_skip: bool = True,
) -> tuple[BlockSpec, ...]:
    """Scales the stages and lays out every block (§1.5–§1.7, §1.12).

    - channels: ``round_filters`` on every stage's input and output filters;
    - repeats: ``round_repeats``, except the first and last stage of 'lite' models (``fix_head_stem``);
    - only a stage's first block takes the stage stride and input filters;
    - SE hidden width: max(1, int(block input filters × se_ratio));
    - stochastic depth: block i of N keeps its residual branch with 1 - (1 - survival_prob)·i/N, and
      only blocks with an identity skip (stride 1, in == out, skip enabled) get it.
    ``survival_prob=None`` turns stochastic depth off everywhere.
    """
    stages = [decode_block_string(s) for s in block_strings]
    stem_filters = STEM_FILTERS if fix_head_stem else scaling.round_filters(STEM_FILTERS, width)
    layout = []
    for stage_index, args in enumerate(stages):
        repeats = args.num_repeat
        if not (fix_head_stem and stage_index in (0, len(stages) - 1)):
            repeats = scaling.round_repeats(repeats, depth)
        in_filters = scaling.round_filters(args.input_filters, width)
        out_filters = scaling.round_filters(args.output_filters, width)
        if stage_index == 0:
            # A fixed 32-channel stem feeds block 0 whatever its declared width (lite3/lite4, §1.12).
            in_filters = stem_filters
        for repeat in range(repeats):
            layout.append((stage_index + 1, args, in_filters if repeat == 0 else out_filters, out_filters,
                           args.strides if repeat == 0 else 1))
    num_blocks = len(layout)
    specs = []
    for index, (stage, args, in_filters, out_filters, strides) in enumerate(layout):
        has_se = use_se and args.se_ratio is not None and 0 < args.se_ratio <= 1
        has_skip = id_skip and args.id_skip and strides == 1 and in_filters == out_filters
        block_survival = None
        if has_skip and survival_prob is not None:
            block_survival = 1.0 - (1.0 - survival_prob) * index / num_blocks
        elif has_skip:
            block_survival = 1.0
        specs.append(
            BlockSpec(
                stage=stage,
                in_filters=in_filters,
                out_filters=out_filters,
                expand_ratio=args.expand_ratio,
                kernel_size=args.kernel_size,
                strides=strides,
                se_filters=max(1, int(in_filters * args.se_ratio)) if has_se else 0,
                survival_prob=block_survival,
            )
        )
    return tuple(specs)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with optional squeeze-and-excitation (§1.6).

    expand 1×1 -> BN -> act (only if expand_ratio != 1) -> depthwise k×k -> BN -> act -> SE ->
    project 1×1 -> BN (linear bottleneck) -> drop-path + identity (only with a skip).
    ``conv``, ``depthwise`` and ``norm`` are injected by the network so that every block shares one
    padding, initialiser, dtype and batch-norm grouping.
    """

    out_filters: int
    expand_ratio: float
    kernel_size: int
    strides: int
    se_filters: int
    survival_prob: float | None  # None: no identity skip
    conv: Callable[..., nn.Module]
    depthwise: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    activation: Callable[[Array], Array] = nn.swish
    se_gate: Callable[[Array], Array] = nn.sigmoid
    se_activation: Callable[[Array], Array] | None = None  # None: the block's activation (MobileNetV3: relu)
    expanded_filters: int | None = None  # override in*expand_ratio (MobileNetV3's free expansion widths)

    @nn.compact
    def __call__(self, inputs: Array, train: bool = False) -> Array:
        in_filters = inputs.shape[-1]
        x = inputs
        expanded = self.expanded_filters or int(in_filters * self.expand_ratio)
        if expanded != in_filters:
            x = self.conv(expanded, (1, 1), name="expand_conv")(x)
            x = self.norm(name="bn0")(x)
            x = self.activation(x)
        x = self.depthwise(self.kernel_size, self.strides, name="depthwise_conv")(x)
        x = self.norm(name="bn1")(x)
        x = self.activation(x)
        if self.se_filters:
            se_activation = self.se_activation or self.activation
            x = layers.SqueezeExcite(self.se_filters, self.conv, se_activation, self.se_gate, name="se")(x)
        self.sow("intermediates", "expansion_output", x)
        x = self.conv(self.out_filters, (1, 1), name="project_conv")(x)
        x = self.norm(name="bn2")(x)
        if self.survival_prob is not None:
            if self.strides != 1 or in_filters != self.out_filters:
                raise ValueError(
                    f"Block with a skip needs stride 1 and equal channels, got stride {self.strides}, "
                    f"{in_filters} -> {self.out_filters} channels."
                )
            x = layers.DropPath(self.survival_prob)(x, deterministic=not train)
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    """EfficientNet: stem -> MBConv stages -> 1×1 head conv -> pool -> dropout -> classifier.

    Attributes:
      blocks: the per-block layout from ``build_blocks``.
      stem_filters, head_filters: channels of the stem and head convolutions (already rounded).
      num_classes: classifier outputs.
      dropout_rate: dropout before the classifier (train only).
      activation: 'swish' (B models) or 'relu6' (lite).
      resolution: the input side the variant was designed for; the network accepts any size.
      dtype: compute dtype (bfloat16 on TPU); parameters stay in ``param_dtype`` (float32).
      bn_axis_name / bn_axis_index_groups: set by the trainer when the forward pass runs under
        ``jax.shard_map`` to average batch statistics over groups of devices (§2.9). Left None, batch
        statistics are over the batch the module sees (global under plain ``jax.jit``).
      depthwise_implementation: see ``effnet_jax.models.depthwise``.
      pointwise_implementation: how 1×1 convolutions and the RGB stem run; see ``effnet_jax.models.pointwise``.
      remat: recompute each block's activations in the backward pass (less memory for B5–B7). Combine
        it with ``scan_blocks``: inside the scan's loop XLA cannot schedule the recomputations early
        (B7, batch 8 at 600px: 9.4 GiB with both against 38 GiB with remat alone, XLA:CPU's estimate).
      scan_blocks: run each stage's repeated blocks (all but its first, which changes stride and
        channels) as one ``nn.scan`` over stacked parameters, so XLA compiles one block per stage
        instead of every block: B7's 55 blocks become 7 scanned bodies plus 7 first blocks, which cuts
        compile time of the large variants. The numbers are the same as without it; the parameters
        of a scanned group live under 'blocks_{first}_to_{last}/block' with a leading block axis
        (``scan_block_variables`` / ``unscan_block_variables`` convert). With it, the 'block_{i}'
        endpoints of a group's interior blocks are not returned (the group's last block is).
      include_head: False returns the feature endpoints and builds no head or classifier (backbone use).

    Call: ``model.apply(variables, images, train=False)`` returns float32 logits of shape
    (batch, num_classes). ``return_endpoints=True`` also returns a dict with the reference's endpoints
    (§1.13): 'stem', 'block_{i}', 'reduction_{1..5}', 'features', 'head_1x1', 'pooled_features',
    'logits'. Each block also sows its 'expansion_output' (the tensor entering the projection) into the
    'intermediates' collection, returned when that collection is passed as ``mutable``.
    """

    blocks: Sequence[BlockSpec]
    stem_filters: int = STEM_FILTERS
    head_filters: int = HEAD_FILTERS
    num_classes: int = 1000
    dropout_rate: float = 0.2
    activation: str = "swish"
    resolution: int = 224
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_momentum: float = layers.BN_MOMENTUM
    bn_epsilon: float = layers.BN_EPSILON
    bn_axis_name: str | None = None
    bn_axis_index_groups: Any = None
    depthwise_implementation: str = "auto"
    pointwise_implementation: str = "auto"
    remat: bool = False
    scan_blocks: bool = False
    include_head: bool = True

    @nn.compact
    def __call__(self, images: Array, train: bool = False, return_endpoints: bool = False):
        activation = layers.get_activation(self.activation)
        conv, depthwise, norm = layers.injected_layers(self, train)
        block_module = nn.remat(MBConv, static_argnums=(2,)) if self.remat else MBConv
        scan_groups = {group[0]: group for group in block_scan_groups(self.blocks)} if self.scan_blocks else {}
        endpoints: dict[str, Array] = {}

        x = layers.as_image_batch(images, self.dtype)
        x = conv(self.stem_filters, (3, 3), strides=(2, 2), name="stem_conv")(x)
        x = norm(name="stem_bn")(x)
        x = activation(x)
        endpoints["stem"] = x

        reduction = 0
        index = 0
        while index < len(self.blocks):
            spec = self.blocks[index]
            block_fields = dict(
                out_filters=spec.out_filters,
                expand_ratio=spec.expand_ratio,
                kernel_size=spec.kernel_size,
                strides=spec.strides,
                se_filters=spec.se_filters,
                conv=conv,
                depthwise=depthwise,
                norm=norm,
                activation=activation,
            )
            if index in scan_groups:
                group = scan_groups[index]
                x = _scan_group(self, group, block_fields, x, train)
                index = group[-1]
            else:
                x = block_module(survival_prob=spec.survival_prob, name=f"blocks_{index}", **block_fields)(x, train)
            endpoints[f"block_{index}"] = x
            # §1.13: a reduction endpoint is the last block before a stride-2 block, and the final block.
            is_last = index == len(self.blocks) - 1
            if is_last or self.blocks[index + 1].strides > 1:
                reduction += 1
                endpoints[f"reduction_{reduction}"] = x
            index += 1
        endpoints["features"] = x
        if not self.include_head:
            return endpoints

        x = conv(self.head_filters, (1, 1), name="head_conv")(x)
        x = norm(name="head_bn")(x)
        x = activation(x)
        endpoints["head_1x1"] = x
        x = jnp.mean(x, axis=(1, 2))
        endpoints["pooled_features"] = x
        logits = layers.classifier(self, x, train)
        endpoints["logits"] = logits
        return (logits, endpoints) if return_endpoints else logits


def block_scan_groups(blocks: Sequence[BlockSpec]) -> list[tuple[int, ...]]:
    """Indices of the blocks that ``scan_blocks`` runs as one ``nn.scan``: per stage, every block but
    the first (they have identical shapes; only their survival probabilities differ), when there are
    at least two of them."""
    groups = []
    for index, spec in enumerate(blocks):
        previous = blocks[index - 1] if index else None
        same = (previous is not None and previous.stage == spec.stage
                and dataclasses.replace(previous, survival_prob=None) == dataclasses.replace(spec, survival_prob=None)
                and previous.has_skip == spec.has_skip)
        if same and groups and groups[-1][-1] == index - 1:
            groups[-1].append(index)
        elif previous is not None and previous.stage == spec.stage:
            groups.append([index])
    return [tuple(group) for group in groups if len(group) >= 2]


def _scan_group_name(group: Sequence[int]) -> str:
    return f"blocks_{group[0]}_to_{group[-1]}"


class _ScannedBlock(nn.Module):
    """The body of a stage's ``nn.scan``: one MBConv, its survival probability the scanned input."""

    block: Callable[..., nn.Module]  # MBConv (or its nn.remat) with every field but survival_prob bound
    train: bool
    survival_prob: float | None  # used when not ``scanned_survival`` (all blocks of the group share it)
    scanned_survival: bool

    @nn.compact
    def __call__(self, x: Array, survival_prob: Array) -> tuple[Array, None]:
        survival_prob = survival_prob if self.scanned_survival else self.survival_prob
        return self.block(survival_prob=survival_prob, name="block")(x, self.train), None


def _scan_group(module: EfficientNet, group: Sequence[int], block_fields: dict, x: Array, train: bool) -> Array:
    """Runs the blocks ``group`` (identical shapes) as one ``nn.scan`` over stacked parameters."""
    probabilities = [module.blocks[index].survival_prob for index in group]
    block = nn.remat(MBConv, static_argnums=(2,), prevent_cse=False) if module.remat else MBConv
    shared = all(p == probabilities[0] for p in probabilities)
    scanned = nn.scan(
        _ScannedBlock,
        variable_axes={"params": 0, "batch_stats": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=0,
        length=len(group),
    )
    # With a shared probability (e.g. survival_prob=None: 1.0 everywhere) it stays a Python float, so
    # DropPath can skip itself; the scanned zeros are then a placeholder the body ignores.
    survival = jnp.asarray([0.0 if shared else p for p in probabilities], jnp.float32)
    body = scanned(functools.partial(block, **block_fields), train, probabilities[0] if shared else None,
                   not shared, name=_scan_group_name(group))
    x, _ = body(x, survival)
    return x


def scan_block_variables(variables: dict, blocks: Sequence[BlockSpec]) -> dict:
    """Variables of an ``EfficientNet`` -> those of the same model with ``scan_blocks=True``: each
    scanned group's 'blocks_{i}' subtrees stacked along a new leading axis (every collection)."""
    variables = dict(variables)
    for collection, tree in variables.items():
        tree = dict(tree)
        for group in block_scan_groups(blocks):
            names = [f"blocks_{index}" for index in group]
            if not all(name in tree for name in names):
                continue
            parts = [tree.pop(name) for name in names]
            tree[_scan_group_name(group)] = {"block": jax.tree.map(lambda *leaves: jnp.stack(leaves), *parts)}
        variables[collection] = tree
    return variables


def unscan_block_variables(variables: dict, blocks: Sequence[BlockSpec]) -> dict:
    """The inverse of ``scan_block_variables``: the layout of the model with ``scan_blocks=False``."""
    variables = dict(variables)
    for collection, tree in variables.items():
        tree = dict(tree)
        for group in block_scan_groups(blocks):
            name = _scan_group_name(group)
            if name not in tree:
                continue
            stacked = tree.pop(name)["block"]
            for position, index in enumerate(group):
                tree[f"blocks_{index}"] = jax.tree.map(lambda leaf, p=position: leaf[p], stacked)
        variables[collection] = tree
    return variables


def efficientnet(
    width: float,
    depth: float,
    *,
    resolution: int,
    dropout_rate: float,
    family: str = "efficientnet",
    survival_prob: float | None = DEFAULT_SURVIVAL_PROB,
    block_strings: Sequence[str] = B0_BLOCKS,
    **module_kwargs,
) -> EfficientNet:
    """An EfficientNet of any width and depth multiplier: the one place that turns a row of §1.3 into
    a module. 'lite' models use relu6, no SE, and a fixed 32-channel stem and 1280-channel head (§1.12)."""
    if family not in ("efficientnet", "lite"):
        raise ValueError(f"Unknown EfficientNet family {family!r}; expected 'efficientnet' or 'lite'.")
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth multipliers must be positive, got width={width}, depth={depth}.")
    if survival_prob is not None and not 0.0 < survival_prob <= 1.0:
        raise ValueError(f"survival_prob must be in (0, 1] or None, got {survival_prob}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
    lite = family == "lite"
    blocks = build_blocks(
        block_strings, width, depth, use_se=not lite, fix_head_stem=lite, survival_prob=survival_prob
    )
    return EfficientNet(
        blocks=blocks,
        stem_filters=STEM_FILTERS if lite else scaling.round_filters(STEM_FILTERS, width),
        head_filters=HEAD_FILTERS if lite else scaling.round_filters(HEAD_FILTERS, width),
        dropout_rate=dropout_rate,
        activation="relu6" if lite else "swish",
        resolution=resolution,
        **module_kwargs,
    )
