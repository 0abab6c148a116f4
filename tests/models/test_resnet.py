"""ResNet-50/101/152: parameter counts (torchvision and Keras variants), layout, Table 3 costs.

Shape-only (``model_cost``); logit parity with Keras' ResNet50 is in tests/convert/test_keras_other.py.
"""
import json

import jax
import jax.numpy as jnp
import pytest

from effnet_jax import summary
from effnet_jax.models import create_model, resolve_model_spec
from effnet_jax.models.cost import model_cost


@pytest.mark.parametrize("name, params", [("resnet-50", 25_557_032), ("resnet-101", 44_549_160),
                                          ("resnet-152", 60_192_808),
                                          ("resnet-200", 64_673_832)])
def test_bias_free_counts_equal_torchvision(name, params):
    assert model_cost(create_model(name), 32).params == params


def test_keras_variant():
    keras_like = create_model("resnet-50", conv_bias=True, stride_on="1x1")
    cost = model_cost(keras_like)
    assert (cost.params, cost.batch_stats) == (25_583_592, 53_120)
    # Downsampling in the 1x1 conv skips 3/4 of the 3x3 work in each stage's first block.
    assert cost.macs / 1e9 == pytest.approx(3.86, abs=0.01)
    assert model_cost(create_model("resnet-50")).macs / 1e9 == pytest.approx(4.09, abs=0.01)


def test_layout_and_scaling():
    model = create_model("resnet-50")
    assert [b.out_filters for b in model.blocks] == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [b.strides for b in model.blocks if b.strides > 1] == [2, 2, 2]
    assert sum(b.has_projection for b in model.blocks) == 4
    assert len(create_model("resnet-50", depth=4).blocks) == 64
    wide = create_model("resnet-50", width=2)
    assert (wide.stem_filters, wide.blocks[0].bottleneck_filters, wide.head_filters) == (128, 128, 4096)
    assert resolve_model_spec("resnet-101", phi=1).name == "resnet-101-phi1"
    with pytest.raises(TypeError, match="depthwise_implementation"):
        create_model("resnet-50", depthwise_implementation="xla")
    assert create_model("resnet-50", depthwise_implementation="auto", remat=True).remat


@pytest.mark.parametrize("name, scaling_args, paper_gmacs", [
    ("resnet-50", {}, 4.1), ("resnet-200", {}, 16.2),  # d=4: the 200-layer ResNet (experiments/table3.py)
    ("resnet-50", dict(resolution=2), 16.4), ("resnet-50", dict(width=2), 14.7), ("resnet-50", dict(phi=2), 16.7)])
def test_table3_multiply_adds(name, scaling_args, paper_gmacs):
    assert model_cost(create_model(name, **scaling_args)).macs / 1e9 == pytest.approx(paper_gmacs, rel=0.10)


def test_forward_shapes_and_padding_grid():
    """The stem's symmetric padding: a 64-px image gives 16x16 after the pool, 2x2 at the end."""
    model = create_model("resnet-50", width=0.125, depth=0.34, num_classes=3, include_head=False)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
    features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3))), shapes)
    assert features.shape == (1, 2, 2, 256)


def test_summary(capsys):
    assert summary.main(["--model", "resnet-50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 25_557_032
    assert [s["output_size"] for s in result["stages"]] == [56, 56, 28, 14, 7, 7]
