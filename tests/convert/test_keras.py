"""Keras applications EfficientNet -> effnet_jax: logits parity with random weights (eval mode).

Keras' model starts with Rescaling(1/255) and Normalization(mean, variance); ours has no normalisation
(the caller applies ``normalize_images``). B0 sets Keras' Normalization to the ImageNet constants
(variance = std², i.e. the correct values) so that both sides see (x/255 - mean)/std = ours with
``normalization_constants('efficientnet')``; B3 keeps the weights=None defaults (mean 0, variance 1:
Keras computes x/255, so ours is fed x/255).
"""
import os

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip('keras')

from effnet_jax.convert import keras as keras_converter  # noqa: E402
from effnet_jax.data import normalization_constants, normalize_images  # noqa: E402

SIZE = 64


def randomize_batch_norms(keras_model, rng):
    """Non-trivial BN statistics (weights=None leaves mean 0, variance 1), so that a mix-up shows."""
    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.numpy() for w in layer.weights)
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
        if layer.name == 'predictions':
            kernel, bias = (w.numpy() for w in layer.weights)
            layer.set_weights([kernel * 20, rng.normal(0, 1, bias.shape)])  # logits of order 1..10


@pytest.fixture(scope='module')
def keras_b0():
    model = keras_converter.build_keras_model('efficientnet-b0', input_shape=(SIZE, SIZE, 3))
    randomize_batch_norms(model, np.random.default_rng(0))
    mean, std = normalization_constants('efficientnet')
    # By type: Keras names it 'normalization_1' if another Keras model was built in this process first.
    normalization = next(l for l in model.layers if isinstance(l, keras.layers.Normalization))
    normalization.set_weights([mean / 255, (std / 255) ** 2, np.array(0)])
    normalization.finalize_state()  # Normalization computes with copies made when it was built
    return model


def test_b0_logits_match_with_imagenet_normalisation(keras_b0):
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_b0(images, training=False).numpy()
    model, variables, report = keras_converter.from_keras_model(keras_b0, 'efficientnet-b0')
    assert report.ok and len(report.loaded) == 311 and len(report.ignored) == 3
    ours = jax.jit(model.apply)(variables, normalize_images(images, *normalization_constants('efficientnet')))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_b3_logits_match_with_keras_default_normalisation():
    keras_model = keras_converter.build_keras_model('efficientnet-b3', input_shape=(SIZE, SIZE, 3))
    randomize_batch_norms(keras_model, np.random.default_rng(2))
    images = np.random.default_rng(3).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_model(images, training=False).numpy()
    model, variables, report = keras_converter.from_keras_model(keras_model, 'efficientnet-b3')
    assert 'mean [0.0, 0.0, 0.0] and std [255.0, 255.0, 255.0]' in report.notes[0]
    assert variables['params']['blocks_25']['depthwise_conv']['kernel'].shape == (3, 3, 1, 2304)
    ours = jax.jit(model.apply)(variables, images / 255.0)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_weights_file_round_trip(keras_b0, tmp_path):
    path = str(tmp_path / 'b0.weights.h5')
    keras_b0.save_weights(path)
    assert keras_converter.classes_in_weights_file(path) == 1000
    _, from_file, report = keras_converter.from_keras_weights_file(path, 'efficientnet-b0')
    _, in_memory, _ = keras_converter.from_keras_model(keras_b0, 'efficientnet-b0')
    jax.tree.map(np.testing.assert_array_equal, from_file, in_memory)
    assert 'published ImageNet constants' not in report.notes[0]  # variance = std² here, not the Keras bug


def test_published_normalisation_is_recognised():
    mean, std = normalization_constants('efficientnet')
    notes = keras_converter._normalization_notes({'normalization/mean': mean / 255,
                                                  'normalization/variance': std / 255})
    assert 'published ImageNet constants' in notes[0]


def test_weights_of_another_model_are_refused(keras_b0, tmp_path):
    path = str(tmp_path / 'b0.weights.h5')
    keras_b0.save_weights(path)
    with pytest.raises(keras_converter.core.ConversionError, match='EfficientNetB1'):
        keras_converter.from_keras_weights_file(path, 'efficientnet-b1')
