"""1×1 and stem convolutions as matrix multiplies (effnet_jax.models.pointwise): same numbers as XLA's convolution."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from effnet_jax.models import create_model, pointwise

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(implementation, x, kernel, strides=(1, 1), padding="SAME"):
    dimension_numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, DIMENSIONS)
    return pointwise.conv_general_dilated(implementation)(x, kernel, strides, padding,
                                                           dimension_numbers=dimension_numbers)


@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 1, 1, 12)])  # a feature map; SE's pooled input
def test_matmul_equals_convolution_forward_and_gradients(shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (1, 1, shape[-1], 10))
    weights = jax.random.normal(jax.random.PRNGKey(2), shape[:-1] + (10,))
    results = {}
    for implementation in ("xla", "matmul"):
        loss = lambda x, k: jnp.sum(jnp.tanh(_conv(implementation, x, k)) * weights)
        results[implementation] = (jax.jit(lambda x, k: _conv(implementation, x, k))(x, kernel),
                                   *jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel))
    for conv_value, matmul_value in zip(results["xla"], results["matmul"]):
        assert conv_value.shape == matmul_value.shape
        np.testing.assert_allclose(matmul_value, conv_value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,strides,padding", [
    ((2, 15, 17, 3), (2, 2), "SAME"),            # EfficientNet's stem, odd sizes: TF-SAME's extra pixel after
    ((2, 16, 16, 3), (2, 2), "SAME"),
    ((2, 9, 8, 3), (1, 1), "VALID"),
    ((2, 9, 8, 2), (1, 2), ((1, 2), (0, 1))),    # explicit padding, unequal strides
])
def test_small_patch_convolutions_as_patches_equal_convolution(shape, strides, padding):
    """The stems' 3×3 convolutions over RGB (patch ≤ MAX_PATCH_SIZE values) run as patches + matmul."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], 8))
    expected = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSIONS)
    weights = jax.random.normal(jax.random.PRNGKey(2), expected.shape)
    results = {}
    for implementation in ("xla", "matmul"):
        loss = lambda x, k: jnp.sum(jnp.tanh(_conv(implementation, x, k, strides, padding)) * weights)
        results[implementation] = (jax.jit(lambda x, k: _conv(implementation, x, k, strides, padding))(x, kernel),
                                   *jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel))
    np.testing.assert_allclose(results["xla"][0], expected, rtol=1e-5, atol=1e-5)
    for conv_value, patches_value in zip(results["xla"], results["matmul"]):
        assert conv_value.shape == patches_value.shape
        np.testing.assert_allclose(patches_value, conv_value, rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda x, k: _conv("matmul", x, k, strides, padding))(x, kernel))
    assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr


def test_other_convolutions_are_left_to_xla():
    # Patches of more than MAX_PATCH_SIZE values: a 3×3 over 4 channels (36), a strided 1×1 over 40
    # (ResNet's shortcut), a 7×7 over 3 (ResNet's stem, 147).
    for kernel_shape, strides in (((3, 3, 4, 8), (1, 1)), ((1, 1, 40, 8), (2, 2)), ((7, 7, 3, 8), (2, 2))):
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, kernel_shape[2]))
        kernel = jax.random.normal(jax.random.PRNGKey(1), kernel_shape)
        expected = lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=DIMENSIONS)
        np.testing.assert_array_equal(_conv("matmul", x, kernel, strides), expected)
        jaxpr = str(jax.make_jaxpr(lambda x, k: _conv("matmul", x, k, strides))(x, kernel))
        assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda x, k: _conv("matmul", x, k))(x, jnp.ones((1, 1, 3, 8))))
    assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr


def test_flax_conv_with_bias_and_bfloat16():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 8), jnp.bfloat16)
    make = lambda implementation: nn.Conv(16, (1, 1), use_bias=True, dtype=jnp.bfloat16,
                                          conv_general_dilated=pointwise.conv_general_dilated(implementation))
    variables = make("xla").init(jax.random.PRNGKey(1), x)
    conv, matmul = (make(i).apply(variables, x) for i in ("xla", "matmul"))
    assert matmul.dtype == conv.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(matmul), np.float32(conv), rtol=2e-2, atol=2e-2)


def test_unknown_implementation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'auto', 'xla', 'matmul'"):
        pointwise.conv_general_dilated("cudnn")


@pytest.mark.parametrize("name", ["mobilenet-v2", "resnet-50"])
def test_other_families_take_the_switch_and_agree(name):
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
    model = create_model(name, num_classes=10, width=0.25, pointwise_implementation="xla")
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), images)
    conv = jax.jit(model.apply)(variables, images)
    matmul = jax.jit(model.clone(pointwise_implementation="matmul").apply)(variables, images)
    np.testing.assert_allclose(matmul, conv, rtol=1e-4, atol=1e-5)
