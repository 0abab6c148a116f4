"""``create_model``: the one way to build any model by name, with compound scaling on top.

Named EfficientNets use the published table (reference-spec §1.3). ``phi=`` builds a compound-scaled
model from the family's baseline with the formula (depth α^φ, width β^φ, resolution γ^φ), and
``depth=`` / ``width=`` / ``resolution=`` scale a single dimension (paper Table 3 / Figure 3 studies).

The other families of the paper's Table 3 live in ``FAMILIES``: each name there is its own baseline
(width 1, depth 1 at its resolution), takes the same ``phi=`` / ``depth=`` / ``width=`` /
``resolution=`` arguments, and rounds channels and repeats its own way (see ``models/mobilenet.py``
and ``models/resnet.py``): MobileNetV2/V3 and ResNet channels to multiples of 8, MobileNetV1 channels
truncated like Keras' α; repeats always ``ceil(depth * repeats)``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from effnet_jax import scaling
from effnet_jax.models import efficientnet, mobilenet, resnet


@dataclasses.dataclass(frozen=True)
class Family:
    """A non-EfficientNet architecture: how to build it from (width, depth) and its defaults."""

    build: Callable[..., nn.Module]  # build(width, depth, **module_attributes) -> module
    module: type  # the Flax module class, whose fields are the accepted overrides
    resolution: int  # the baseline input side
    dropout_rate: float  # classifier dropout (train only)


FAMILIES: dict[str, Family] = {
    "mobilenet-v1": Family(mobilenet.mobilenet_v1, mobilenet.MobileNetV1, 224, 1e-3),
    "mobilenet-v2": Family(mobilenet.mobilenet_v2, mobilenet.MobileNetV2, 224, 0.2),
    "mobilenet-v3-large": Family(functools.partial(mobilenet.mobilenet_v3, "large"), mobilenet.MobileNetV3, 224, 0.2),
    "mobilenet-v3-small": Family(functools.partial(mobilenet.mobilenet_v3, "small"), mobilenet.MobileNetV3, 224, 0.2),
    "resnet-50": Family(functools.partial(resnet.resnet, 50), resnet.ResNet, 224, 0.0),
    "resnet-101": Family(functools.partial(resnet.resnet, 101), resnet.ResNet, 224, 0.0),
    "resnet-152": Family(functools.partial(resnet.resnet, 152), resnet.ResNet, 224, 0.0),
    "resnet-200": Family(functools.partial(resnet.resnet, 200), resnet.ResNet, 224, 0.0),
}
# Trainer-wide options that some families do not have: dropped there when left at these defaults.
OPTIONAL_OVERRIDES = {"remat": False, "scan_blocks": False, "depthwise_implementation": "auto"}

# A φ-model scales its family's baseline; these names accept ``phi=``.
PHI_BASELINES = {
    "efficientnet": "efficientnet-b0",
    "efficientnet-b0": "efficientnet-b0",
    "efficientnet-lite": "efficientnet-lite0",
    "efficientnet-lite0": "efficientnet-lite0",
    **{name: name for name in FAMILIES},
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a name (plus scaling arguments) resolves to, before any module is built."""

    name: str  # canonical description, e.g. 'efficientnet-b3' or 'efficientnet-phi2.5'
    family: str
    width: float
    depth: float
    resolution: int
    dropout_rate: float
    published: bool  # True for a row of the published table, False for formula-scaled models
    scaling: scaling.CompoundScaling | None = None


def model_names(all_families: bool = False) -> list[str]:
    """The EfficientNet names ``create_model`` accepts; with ``all_families`` every name (+ FAMILIES)."""
    return sorted(efficientnet.VARIANTS) + (sorted(FAMILIES) if all_families else [])


def baseline_name(spec: ModelSpec) -> str:
    """The model a spec's family scales from (what compound-scaling growth is measured against)."""
    if spec.family in FAMILIES:
        return spec.family
    return "efficientnet-lite0" if spec.family == "lite" else "efficientnet-b0"


def _unknown_name_error(name: str) -> ValueError:
    return ValueError(
        f"Unknown model {name!r}. Known models: {', '.join(model_names(all_families=True))}. "
        f"Compound-scaled models: create_model('efficientnet', phi=...) or create_model('efficientnet-lite', phi=...)."
    )


def resolve_model_spec(
    name: str,
    *,
    phi: float | None = None,
    alpha: float = scaling.DEFAULT_ALPHA,
    beta: float = scaling.DEFAULT_BETA,
    gamma: float = scaling.DEFAULT_GAMMA,
    depth: float | None = None,
    width: float | None = None,
    resolution: float | None = None,
) -> ModelSpec:
    """Turns a name and scaling arguments into multipliers.

    ``depth``/``width``/``resolution`` are multipliers applied on top of the named (or φ-scaled) model;
    ``resolution`` multiplies its input side (rounded to a multiple of 8).
    """
    if not isinstance(name, str):
        raise TypeError(f"Model name must be a string, got {type(name).__name__}.")
    if phi is not None and name not in PHI_BASELINES:
        raise ValueError(
            f"phi= scales a family's baseline; {name!r} is not one. Use one of: {', '.join(PHI_BASELINES)}."
        )
    if phi is not None and name in FAMILIES:
        family = FAMILIES[name]
        compound = scaling.compound_scaling(phi, alpha, beta, gamma, base_resolution=family.resolution)
        spec = ModelSpec(f"{name}-phi{phi:g}", name, compound.width, compound.depth, compound.resolution,
                         family.dropout_rate, published=False, scaling=compound)
    elif phi is not None:
        base = efficientnet.VARIANTS[PHI_BASELINES[name]]
        compound = scaling.compound_scaling(phi, alpha, beta, gamma, base_resolution=base.resolution)
        family_label = "efficientnet-lite" if base.family == "lite" else "efficientnet"
        spec = ModelSpec(
            name=f"{family_label}-phi{phi:g}",
            family=base.family,
            width=base.width * compound.width,
            depth=base.depth * compound.depth,
            resolution=compound.resolution,
            dropout_rate=scaling.dropout_for_phi(phi),
            published=False,
            scaling=compound,
        )
    elif name in efficientnet.VARIANTS:
        variant = efficientnet.VARIANTS[name]
        spec = ModelSpec(name, variant.family, variant.width, variant.depth, variant.resolution,
                         variant.dropout_rate, published=True)
    elif name in FAMILIES:
        spec = ModelSpec(name, name, 1.0, 1.0, FAMILIES[name].resolution, FAMILIES[name].dropout_rate,
                         published=True)
    else:
        raise _unknown_name_error(name)

    for label, value in (("depth", depth), ("width", width), ("resolution", resolution)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} multiplier must be positive, got {value}.")
    if depth is None and width is None and resolution is None:
        return spec
    suffix = "".join(f"-{k[0]}{v:g}" for k, v in (("depth", depth), ("width", width), ("resolution", resolution)) if v)
    return dataclasses.replace(
        spec,
        name=spec.name + suffix,
        width=spec.width * (width or 1.0),
        depth=spec.depth * (depth or 1.0),
        resolution=scaling.round_resolution(spec.resolution * (resolution or 1.0)),
        published=False,
    )


def create_model(
    name: str,
    num_classes: int = 1000,
    dtype: Any = jnp.float32,
    *,
    phi: float | None = None,
    alpha: float = scaling.DEFAULT_ALPHA,
    beta: float = scaling.DEFAULT_BETA,
    gamma: float = scaling.DEFAULT_GAMMA,
    depth: float | None = None,
    width: float | None = None,
    resolution: float | None = None,
    dropout_rate: float | None = None,
    survival_prob: float | None = efficientnet.DEFAULT_SURVIVAL_PROB,
    block_strings: Sequence[str] | None = None,
    **overrides,
) -> nn.Module:
    """Builds a model by its reference name, e.g. ``create_model('efficientnet-b3')``.

    Args:
      name: a reference name (``model_names(all_families=True)``: EfficientNets, 'mobilenet-v1',
        'mobilenet-v2', 'mobilenet-v3-large', 'mobilenet-v3-small', 'resnet-50', 'resnet-101',
        'resnet-152', 'resnet-200'), or a family baseline when ``phi`` is given.
      num_classes: classifier outputs (1000 for ImageNet).
      dtype: compute dtype (``jnp.bfloat16`` on TPU); parameters stay float32.
      phi, alpha, beta, gamma: compound scaling from the family's baseline (formula, not the table).
      depth, width, resolution: single-dimension multipliers on top of the named model.
      dropout_rate: overrides the variant's classifier dropout.
      survival_prob: stochastic-depth survival of the last block (0.8); None disables it.
        EfficientNet only: the other families (``FAMILIES``) have no stochastic depth and ignore it.
      block_strings: the stages in the reference's block-string format (default: B0's seven);
        e.g. the first two for a fast toy network, or a searched architecture.
      **overrides: other attributes of the family's module (``EfficientNet``: ``depthwise_implementation``,
        ``pointwise_implementation``, ``remat``, ``scan_blocks``, ``include_head``, ``bn_axis_name``, ...;
        ``ResNet``: also ``conv_bias``, ``stride_on``; every family has ``pointwise_implementation``).
        ``remat=False``, ``scan_blocks=False`` and ``depthwise_implementation='auto'`` are accepted by
        every family.

    Raises:
      ValueError: for an unknown name (listing the known ones) or invalid scaling arguments.
    """
    spec = resolve_model_spec(
        name, phi=phi, alpha=alpha, beta=beta, gamma=gamma, depth=depth, width=width, resolution=resolution
    )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if spec.family in FAMILIES:
        if block_strings is not None:
            raise ValueError(f"block_strings describe EfficientNet stages; {name!r} has its own layout.")
        family = FAMILIES[spec.family]
        fields = {f.name for f in dataclasses.fields(family.module)}
        overrides = {k: v for k, v in overrides.items()
                     if k in fields or OPTIONAL_OVERRIDES.get(k, object()) != v}
        unknown = set(overrides) - fields
        if unknown:
            raise TypeError(f"create_model got unknown arguments {sorted(unknown)} for {spec.family}.")
        return family.build(
            spec.width,
            spec.depth,
            resolution=spec.resolution,
            dropout_rate=spec.dropout_rate if dropout_rate is None else dropout_rate,
            num_classes=num_classes,
            dtype=dtype,
            **overrides,
        )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(efficientnet.EfficientNet)}
    if unknown:
        raise TypeError(f"create_model got unknown arguments {sorted(unknown)}.")
    return efficientnet.efficientnet(
        spec.width,
        spec.depth,
        resolution=spec.resolution,
        dropout_rate=spec.dropout_rate if dropout_rate is None else dropout_rate,
        family=spec.family,
        survival_prob=survival_prob,
        block_strings=efficientnet.B0_BLOCKS if block_strings is None else tuple(block_strings),
        num_classes=num_classes,
        dtype=dtype,
        **overrides,
    )
