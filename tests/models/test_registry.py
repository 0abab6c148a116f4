"""create_model: every name, φ-models, single-dimension scaling, and clear errors."""
import jax
import jax.numpy as jnp
import pytest

from effnet_jax import scaling
from effnet_jax.models import create_model, efficientnet, model_names, resolve_model_spec
from effnet_jax.models.cost import model_cost


def test_every_reference_name_is_known():
    expected = {f"efficientnet-b{i}" for i in range(9)} | {f"efficientnet-lite{i}" for i in range(5)}
    assert set(model_names()) == expected | {"efficientnet-l2"}


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="efficientnet-b0.*efficientnet-lite4"):
        create_model("efficientnet-b9")
    with pytest.raises(ValueError, match="phi= scales a family's baseline"):
        create_model("efficientnet-b3", phi=1.0)
    with pytest.raises(TypeError, match="not_a_field"):
        create_model("efficientnet-b0", not_a_field=1)


def test_named_variant_uses_published_table():
    model = create_model("efficientnet-b4", num_classes=7, dtype=jnp.bfloat16)
    assert (model.resolution, model.dropout_rate, model.num_classes, model.dtype) == (380, 0.4, 7, jnp.bfloat16)
    assert model.param_dtype == jnp.float32


def test_phi_model_uses_the_formula():
    spec = resolve_model_spec("efficientnet", phi=2.5)
    compound = scaling.compound_scaling(2.5)
    assert (spec.width, spec.depth, spec.resolution) == (compound.width, compound.depth, compound.resolution)
    assert not spec.published
    expected = efficientnet.build_blocks(efficientnet.B0_BLOCKS, compound.width, compound.depth)
    assert create_model("efficientnet", phi=2.5).blocks == expected
    # φ = 0 is B0 exactly.
    assert create_model("efficientnet", phi=0).blocks == create_model("efficientnet-b0").blocks
    lite = resolve_model_spec("efficientnet-lite", phi=1)
    assert lite.family == "lite" and lite.width == pytest.approx(1.1)


def test_phi_scaling_grows_multiply_adds_about_twofold_per_step():
    base = model_cost(create_model("efficientnet", phi=0)).macs
    scaled = model_cost(create_model("efficientnet", phi=1)).macs
    assert 1.5 < scaled / base < 2.6


def test_single_dimension_scaling():
    spec = resolve_model_spec("efficientnet-b0", depth=2.0, resolution=1.5)
    assert (spec.width, spec.depth, spec.resolution) == (1.0, 2.0, 336)
    assert len(create_model("efficientnet-b0", depth=2.0).blocks) == 32
    assert len(create_model("efficientnet-b0", depth=1.5).blocks) == 2 + 3 + 3 + 5 + 5 + 6 + 2  # ceil(1.5 r)
    with pytest.raises(ValueError, match="width multiplier must be positive"):
        create_model("efficientnet-b0", width=0)


def test_overrides_reach_the_module():
    model = create_model("efficientnet-b0", dropout_rate=0.0, survival_prob=None, remat=True,
                         depthwise_implementation="xla")
    assert model.dropout_rate == 0.0 and model.remat and model.depthwise_implementation == "xla"
    assert all(b.survival_prob in (None, 1.0) for b in model.blocks)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert variables["params"]["classifier"]["kernel"].shape == (1280, 1000)
