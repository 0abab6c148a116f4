"""Compound-scaling arithmetic: the reference's rounding rules and the paper's formula."""
import math

import pytest

from effnet_jax import scaling


@pytest.mark.parametrize(
    "filters, width, expected",
    [
        (32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (32, 1.4, 48), (32, 1.8, 56), (32, 2.0, 64),
        (32, 4.3, 136), (1280, 1.1, 1408), (1280, 1.8, 2304), (40, 1.1, 48), (80, 1.1, 88),
        (16, 0.25, 8),  # min_depth
        (24, 0.5, 16),  # 12 rounds to 16: never below 90% of the scaled value
        (32, None, 32),
    ],
)
def test_round_filters_matches_reference_table(filters, width, expected):
    assert scaling.round_filters(filters, width) == expected


def test_round_filters_never_rounds_down_more_than_ten_percent():
    for filters in range(8, 400):
        for width in (0.3, 0.55, 0.9, 1.13, 1.7, 3.3):
            rounded = scaling.round_filters(filters, width)
            assert rounded % 8 == 0 and rounded >= 0.9 * filters * width


def test_round_repeats_rounds_up():
    assert [scaling.round_repeats(r, 3.1) for r in (1, 2, 2, 3, 3, 4, 1)] == [4, 7, 7, 10, 10, 13, 4]
    assert scaling.round_repeats(3, None) == 3


def test_compound_scaling_formula():
    base = scaling.compound_scaling(0)
    assert (base.depth, base.width, base.resolution, base.flops_growth) == (1.0, 1.0, 224, 1.0)
    two = scaling.compound_scaling(2.0)
    assert two.depth == pytest.approx(1.2**2) and two.width == pytest.approx(1.1**2)
    assert two.resolution == 296  # 224 * 1.15^2 = 296.24 -> nearest multiple of 8
    assert two.flops_growth_per_phi == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert two.flops_growth == pytest.approx(two.flops_growth_per_phi**2)
    assert two.meets_flops_target
    assert not scaling.compound_scaling(1, alpha=1.5, beta=1.3, gamma=1.3).meets_flops_target
    half = scaling.compound_scaling(0.5, alpha=2.0, beta=1.0, gamma=1.0)
    assert half.depth == pytest.approx(math.sqrt(2)) and half.flops_growth == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("kwargs", [dict(phi=-1), dict(phi=float("nan")), dict(phi=1, alpha=0.9),
                                    dict(phi=1, gamma=0.5), dict(phi=1, base_resolution=0)])
def test_compound_scaling_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        scaling.compound_scaling(**kwargs)


def test_dropout_for_phi_interpolates_b0_to_b7():
    assert scaling.dropout_for_phi(0) == pytest.approx(0.2)
    assert scaling.dropout_for_phi(7) == pytest.approx(0.5)
    assert scaling.dropout_for_phi(20) == pytest.approx(0.5)
