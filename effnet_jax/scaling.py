"""Compound-scaling arithmetic (EfficientNet paper §3.3, reference-spec §1.5 and §5.1).

A network is scaled by three multipliers: depth d (repeats per stage), width w (channels) and input
resolution r. Compound scaling ties them to one coefficient φ:

    d = α^φ,   w = β^φ,   r = γ^φ,   with α·β²·γ² ≈ 2 and α, β, γ ≥ 1,

so that the multiply-adds of a convolutional network (which grow as d·w²·r²) grow by about 2^φ.
The paper's grid search at φ = 1 gave α = 1.2, β = 1.1, γ = 1.15.

The rounding rules are the reference's: channels round to the nearest multiple of 8 (never down by more
than 10%), repeats round up. The published B1–B7 table is *not* exactly α^φ (reference-spec §1.5):
named variants use that table; φ-models use the formula, and `effnet_jax.summary` shows both.
"""
from __future__ import annotations

import dataclasses
import math

DEFAULT_ALPHA = 1.2
DEFAULT_BETA = 1.1
DEFAULT_GAMMA = 1.15
FLOPS_GROWTH_TARGET = 2.0
# Multiply-adds of a conv net grow as depth · width² · resolution²; the paper accepts α·β²·γ² "≈ 2".
FLOPS_GROWTH_TOLERANCE = 0.1
RESOLUTION_DIVISOR = 8


def round_filters(filters: int, width: float | None, divisor: int = 8, min_depth: int | None = None) -> int:
    """Channels after width scaling, as the reference rounds them (reference-spec §1.5).

    Rounds ``filters * width`` to the nearest multiple of ``divisor`` (ties up), at least ``min_depth``
    (default: ``divisor``), and never more than 10% below the unrounded value.
    """
    if not width:
        return filters
    min_depth = min_depth or divisor
    scaled = filters * width
    new_filters = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * scaled:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, depth: float | None) -> int:
    """Blocks in a stage after depth scaling: ``ceil(depth * repeats)`` (reference-spec §1.5)."""
    if not depth:
        return repeats
    return int(math.ceil(depth * repeats))


def round_resolution(resolution: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """Input side length rounded to the nearest multiple of ``divisor`` (8: friendly to TPU tiling)."""
    return max(divisor, int(round(resolution / divisor)) * divisor)


@dataclasses.dataclass(frozen=True)
class CompoundScaling:
    """The multipliers that compound coefficient ``phi`` gives, and what they cost.

    Attributes:
      phi: the compound coefficient φ ≥ 0.
      alpha, beta, gamma: per-dimension bases (depth, width, resolution).
      depth: α^φ, multiplies each stage's repeats.
      width: β^φ, multiplies each layer's channels.
      resolution_multiplier: γ^φ, multiplies the base input side.
      resolution: base resolution × γ^φ, rounded to a multiple of 8 pixels.
      flops_growth_per_phi: α·β²·γ², the factor by which multiply-adds grow per unit of φ (target 2).
      flops_growth: (α·β²·γ²)^φ, the predicted multiply-add ratio to the base model.
    """

    phi: float
    alpha: float
    beta: float
    gamma: float
    depth: float
    width: float
    resolution_multiplier: float
    resolution: int
    flops_growth_per_phi: float
    flops_growth: float

    @property
    def meets_flops_target(self) -> bool:
        """Whether α·β²·γ² is within FLOPS_GROWTH_TOLERANCE of 2 (the paper's constraint)."""
        return abs(self.flops_growth_per_phi - FLOPS_GROWTH_TARGET) <= FLOPS_GROWTH_TOLERANCE


def flops_growth_per_phi(alpha: float, beta: float, gamma: float) -> float:
    """α·β²·γ²: multiply-adds grow by this factor each time φ grows by one."""
    return alpha * beta**2 * gamma**2


# Largest φ accepted: 2^20 times the baseline's FLOPs; beyond it the multipliers are meaningless (and
# overflow float64 from φ ≈ 1000), so a typo fails here rather than as an OverflowError or an OOM.
MAX_PHI = 20.0


def compound_scaling(
    phi: float,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    base_resolution: int = 224,
) -> CompoundScaling:
    """Depth, width and resolution multipliers for compound coefficient ``phi``.

    Raises:
      ValueError: if φ < 0, φ > MAX_PHI or any base is below 1 (the paper requires α, β, γ ≥ 1).
    """
    phi = float(phi)
    if not math.isfinite(phi) or phi < 0:
        raise ValueError(f"phi must be a finite number >= 0, got {phi}. phi=0 is the base model (B0).")
    if phi > MAX_PHI:
        raise ValueError(f"phi={phi:g} is beyond MAX_PHI={MAX_PHI:g} (2^{MAX_PHI:g} times B0's FLOPs; "
                         "EfficientNet-L2 is about phi=9); choose a smaller phi.")
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not math.isfinite(value) or value < 1.0:
            raise ValueError(f"{label} must be >= 1 (the paper's constraint), got {value}.")
    if base_resolution <= 0:
        raise ValueError(f"base_resolution must be positive, got {base_resolution}.")
    growth = flops_growth_per_phi(alpha, beta, gamma)
    resolution_multiplier = gamma**phi
    return CompoundScaling(
        phi=phi,
        alpha=float(alpha),
        beta=float(beta),
        gamma=float(gamma),
        depth=alpha**phi,
        width=beta**phi,
        resolution_multiplier=resolution_multiplier,
        resolution=round_resolution(base_resolution * resolution_multiplier),
        flops_growth_per_phi=growth,
        flops_growth=growth**phi,
    )


def dropout_for_phi(phi: float, base_rate: float = 0.2, top_rate: float = 0.5, top_phi: float = 7.0) -> float:
    """Classifier dropout for a φ-model: linear from 0.2 at B0 to 0.5 at B7 (paper §5.2), clipped."""
    return float(min(top_rate, base_rate + (top_rate - base_rate) * max(phi, 0.0) / top_phi))
