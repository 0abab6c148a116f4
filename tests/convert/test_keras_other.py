"""Keras applications MobileNet/V2/V3 and ResNet50 -> effnet_jax: logit parity with random weights.

Keras models are built with ``weights=None``, every batch norm gets random statistics and the
classifier larger weights, so that a mixed-up tensor or a shifted padding grid shows in the logits.
Ours are built from the converted Keras tensors (no ``model.init``) and run in eval mode at 64 px.
"""
import os

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip('keras')

from effnet_jax.convert import core, keras_other  # noqa: E402

SIZE = 64
# Tensors per model: conv kernels, depthwise kernels, 4 per batch norm, biases.
EXPECTED_TENSORS = {'mobilenet-v2': 262, 'mobilenet-v3-small': 210, 'resnet-50': 320,
                    'mobilenet-v1': 137, 'mobilenet-v3-large': 266}


def randomize(keras_model, rng):
    """Random BN statistics and affine terms (weights=None leaves 0/1), larger classifier weights."""
    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.numpy() for w in layer.weights)
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
        elif layer.name in ('predictions', 'logits', 'conv_preds') and layer.weights:
            kernel, bias = (w.numpy() for w in layer.weights)
            layer.set_weights([kernel * 20, rng.normal(0, 1, bias.shape)])


def logits_difference(model_name, seed):
    keras_model = keras_other.build_keras_model(model_name, input_shape=(SIZE, SIZE, 3))
    randomize(keras_model, np.random.default_rng(seed))
    images = np.random.default_rng(seed + 1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_model(images, training=False).numpy()
    model, variables, report = keras_other.from_keras_model(keras_model, model_name)
    assert report.ok and len(report.loaded) == EXPECTED_TENSORS[model_name], report.summary()
    ours = np.asarray(jax.jit(model.apply)(variables, images))
    assert np.abs(expected).max() > 1.0  # the comparison means something
    return float(np.abs(ours - expected).max())


@pytest.mark.parametrize('model_name', ['mobilenet-v2', 'mobilenet-v3-small', 'resnet-50'])
def test_logits_match_keras(model_name):
    assert logits_difference(model_name, seed=len(model_name)) <= 1e-4


def test_converted_resnet_is_the_keras_variant():
    keras_model = keras_other.build_keras_model('resnet-50', num_classes=10, input_shape=(SIZE, SIZE, 3))
    model, variables, _ = keras_other.from_keras_model(keras_model, 'resnet-50')
    assert (model.stride_on, model.conv_bias, model.num_classes) == ('1x1', True, 10)
    assert variables['params']['blocks_3']['conv1']['kernel'].shape == (1, 1, 256, 128)


def test_wrong_model_is_reported_in_full():
    keras_model = keras_other.build_keras_model('mobilenet-v3-small', input_shape=(SIZE, SIZE, 3))
    tensors = keras_other.keras_tensors(keras_model)
    with pytest.raises(core.ConversionError, match=r'missing:(.|\n)*expanded_conv_11_expand'):
        keras_other.convert_tensors('mobilenet-v3-large', tensors)
    with pytest.raises(ValueError, match='this converter knows'):
        keras_other.convert_tensors('efficientnet-b0', tensors)
