"""MobileNetV1/V2/V3: Keras' parameter counts, published layouts, scaling rules, Table 3 costs, summary.

Counts and multiply-adds come from shape-only traces (``model_cost``); the one forward pass runs a
narrow V3-Small at 32 px with variables made by numpy (no ``model.init`` compile). Logit parity with
Keras is in tests/convert/test_keras_other.py.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnet_jax import summary
from effnet_jax.models import create_model, resolve_model_spec
from effnet_jax.models.cost import model_cost

# keras.applications.X(weights=None): trainable parameters (count_params() minus BN moving statistics).
KERAS_TRAINABLE = {
    "mobilenet-v1": 4_231_976,
    "mobilenet-v2": 3_504_872,
    "mobilenet-v3-large": 5_483_032,
    "mobilenet-v3-small": 2_542_856,
}


def numpy_variables(model, size=32, seed=0):
    """Variables of the right shapes without model.init: random params, BN statistics mean 0 / var 1."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = path[-1].key
        if name == "var":
            return jnp.ones(leaf.shape)
        if name in ("mean", "bias"):
            return jnp.zeros(leaf.shape)
        if name == "scale":
            return jnp.ones(leaf.shape)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(make, shapes)


@pytest.mark.parametrize("name", sorted(KERAS_TRAINABLE))
def test_trainable_parameters_equal_keras(name):
    assert model_cost(create_model(name), 32).params == KERAS_TRAINABLE[name]


def test_v3_layout_is_the_published_table():
    large = create_model("mobilenet-v3-large")
    assert [b.expanded_filters for b in large.blocks] == [16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672,
                                                         672, 960, 960]
    assert [b.se_filters for b in large.blocks] == [0, 0, 0, 24, 32, 32, 0, 0, 0, 0, 120, 168, 168, 240, 240]
    assert (large.head_filters, large.head_features) == (960, 1280)
    small = create_model("mobilenet-v3-small")
    assert [b.expanded_filters for b in small.blocks] == [16, 72, 88, 96, 240, 240, 120, 144, 288, 576, 576]
    assert (small.head_filters, small.head_features, small.blocks[0].se_filters) == (576, 1024, 8)
    assert [b.activation for b in small.blocks[2:4]] == ["relu", "hard_swish"]


def test_v2_layout_and_width_rounding():
    model = create_model("mobilenet-v2")
    assert [b.out_filters for b in model.blocks] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96,
                                                     160, 160, 160, 320]
    assert sum(b.has_skip for b in model.blocks) == 10
    narrow = create_model("mobilenet-v2", width=0.35)  # Keras alpha 0.35: channels to multiples of 8
    assert (narrow.stem_filters, narrow.head_filters) == (16, 1280)
    assert [b.out_filters for b in narrow.blocks][::4] == [8, 16, 24, 32, 112]
    wide = create_model("mobilenet-v2", width=1.4)
    assert (wide.stem_filters, wide.head_filters, wide.blocks[-1].out_filters) == (48, 1792, 448)


def test_v1_width_truncates_like_keras_alpha_and_depth_rounds_up():
    model = create_model("mobilenet-v1", width=0.75)
    assert [b.out_filters for b in model.blocks][:3] == [48, 96, 96]
    deep = resolve_model_spec("mobilenet-v1", depth=1.4)
    assert deep.name == "mobilenet-v1-d1.4"
    # Stages (1, 2, 2, 6, 2) -> ceil(1.4 x) = (2, 3, 3, 9, 3); added blocks have stride 1.
    blocks = create_model("mobilenet-v1", depth=1.4).blocks
    assert len(blocks) == 20 and [b.strides for b in blocks[:3]] == [1, 1, 2]


def test_phi_scales_every_family():
    spec = resolve_model_spec("mobilenet-v3-small", phi=1)
    assert (spec.name, spec.depth, spec.width, spec.resolution) == ("mobilenet-v3-small-phi1", 1.2, 1.1, 256)
    base = model_cost(create_model("mobilenet-v2"), 224).macs
    scaled = model_cost(create_model("mobilenet-v2", phi=1)).macs
    assert 1.6 < scaled / base < 2.6
    with pytest.raises(TypeError, match="unknown arguments"):
        create_model("mobilenet-v2", conv_bias=True)
    with pytest.raises(ValueError, match="block_strings"):
        create_model("mobilenet-v2", block_strings=["r1_k3_s11_e1_i32_o16"])
    # The trainer's options reach every family or are dropped where they mean nothing.
    model = create_model("mobilenet-v2", remat=False, depthwise_implementation="xla", bn_momentum=0.9)
    assert (model.depthwise_implementation, model.bn_momentum) == ("xla", 0.9)


# Paper Table 3 (reference-spec §5.2): multiply-adds within 10% of the paper's FLOPs.
TABLE3 = [
    ("mobilenet-v1", {}, 0.6),
    ("mobilenet-v1", dict(width=2), 2.2),
    ("mobilenet-v1", dict(resolution=2), 2.2),
    ("mobilenet-v1", dict(depth=1.4, width=1.2, resolution=1.3), 2.3),
    ("mobilenet-v2", {}, 0.3),
    ("mobilenet-v2", dict(depth=4), 1.2),
    ("mobilenet-v2", dict(width=2), 1.1),
    ("mobilenet-v2", dict(resolution=2), 1.2),
    ("mobilenet-v2", dict(depth=1.4, width=1.2, resolution=1.3), 1.3),
]


@pytest.mark.parametrize("name, scaling_args, paper_gmacs", TABLE3)
def test_table3_multiply_adds(name, scaling_args, paper_gmacs):
    model = create_model(name, **scaling_args)
    macs = model_cost(model).macs
    assert macs / 1e9 == pytest.approx(paper_gmacs, rel=0.10)


def test_v3_small_train_step_updates_batch_stats():
    model = create_model("mobilenet-v3-small", width=0.35, depth=0.5, num_classes=5)
    variables = numpy_variables(model)
    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    train_step = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                       rngs={"dropout": rng}))
    logits, updates = train_step(variables, images, jax.random.PRNGKey(0))
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(moved)) and np.all(np.isfinite(np.asarray(logits)))


def test_summary_prints_the_new_families(capsys):
    assert summary.main(["--model", "mobilenet-v3-small", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 2_542_856 and result["blocks"] == 11
    assert [s["output_size"] for s in result["stages"]] == [112, 56, 28, 14, 14, 7, 7]
    summary.main(["--model", "mobilenet-v1", "--width", "0.5"])
    text = capsys.readouterr().out
    assert "DWConv3x3+Conv1x1" in text and "mobilenet-v1-w0.5" in text
