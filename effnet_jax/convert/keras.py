"""Keras applications EfficientNetB0–B7 (``keras.applications.EfficientNetBx``) -> effnet_jax.

Keras names layers ``stem_conv``, ``block{stage}{letter}_{layer}`` (stage 1..7, letter a, b, ...
per repeat), ``top_conv`` and ``predictions`` (reference-spec §1.14). Kernels already have our
(kh, kw, in, out) layout except the depthwise kernel, stored (k, k, C, 1).

Weight files (``.h5`` from keras.io / Keras 2, or Keras 3 ``.weights.h5``) are read by building the
Keras model with ``weights=None`` and calling ``load_weights``: the Keras 3 format stores variables
under auto-generated names ('conv2d_3'), so only Keras itself can match a file to layer names.

Input normalisation: Keras puts it inside the model (Rescaling 1/255 -> Normalization(mean, variance)
[-> Rescaling(1/sqrt(std)) only when built with weights='imagenet']). The published files store
mean = ImageNet mean and variance = ImageNet *std* (tensorflow/tensorflow#49930); together with the
extra Rescaling that makes (x/255 - mean) / std, i.e. exactly ``effnet_jax.data.normalize_images``
with ``normalization_constants('efficientnet')`` on [0, 255] images. effnet_jax models contain no
normalisation, so the converter drops those layers and the caller normalises as for any
EfficientNet. ``keras_normalization`` reports what a given Keras model's layers compute, so that a
different setting (e.g. a model with ``weights=None``: mean 0, variance 1, i.e. just x/255) is noted.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from effnet_jax.convert import core

# Our module -> Keras layer name. Block layers get the 'block{stage}{letter}_' prefix.
TOP_LEVEL_LAYERS = {
    'stem_conv': 'stem_conv',
    'stem_bn': 'stem_bn',
    'head_conv': 'top_conv',
    'head_bn': 'top_bn',
    'classifier': 'predictions',
}
BLOCK_LAYERS = {
    'expand_conv': 'expand_conv',
    'bn0': 'expand_bn',
    'depthwise_conv': 'dwconv',
    'bn1': 'bn',
    'se/reduce': 'se_reduce',
    'se/expand': 'se_expand',
    'project_conv': 'project_conv',
    'bn2': 'project_bn',
}
VARIABLES = {
    ('conv', 'kernel'): 'kernel',
    ('conv', 'bias'): 'bias',
    ('depthwise', 'kernel'): 'kernel',  # Keras 2 called it 'depthwise_kernel'; Keras 3 'kernel'
    ('dense', 'kernel'): 'kernel',
    ('dense', 'bias'): 'bias',
    ('batch_norm', 'scale'): 'gamma',
    ('batch_norm', 'bias'): 'beta',
    ('batch_norm', 'mean'): 'moving_mean',
    ('batch_norm', 'var'): 'moving_variance',
}
# Keras' constructor for each effnet_jax model name.
KERAS_APPLICATIONS = {f'efficientnet-b{i}': f'EfficientNetB{i}' for i in range(8)}
# Layers that hold no weights of ours: the in-model input preprocessing.
PREPROCESSING_LAYERS = ('normalization', 'rescaling')


def _layer_name(block: core.BlockPosition | None, module: str) -> str:
    if block is None:
        return TOP_LEVEL_LAYERS[module]
    return f'block{block.stage}{chr(ord("a") + block.repeat)}_{BLOCK_LAYERS[module]}'


def _is_preprocessing(name: str) -> bool:
    return name.split('/')[0].startswith(PREPROCESSING_LAYERS)


NAMING = core.Naming(
    framework='keras',
    module_name=_layer_name,
    variable_names=VARIABLES,
    separator='/',
    layouts={'conv': 'same', 'dense': 'same', 'depthwise': 'hwc1'},
    ignore=_is_preprocessing,
)


def keras_tensors(keras_model) -> dict[str, np.ndarray]:
    """{'layer_name/variable_name': array} for every variable of a (built) Keras model.

    Nested models are flattened by layer name, which is what the EfficientNet applications use.
    """
    import keras
    tensors = {}
    for layer in keras_model.layers:
        if hasattr(layer, 'layers') and layer.layers:  # a nested Functional (e.g. a fine-tuned backbone)
            tensors.update(keras_tensors(layer))
            continue
        for variable in layer.weights:
            short_name = variable.name.split('/')[-1].split(':')[0]
            if short_name == 'depthwise_kernel':
                short_name = 'kernel'
            # Keras uniquifies unnamed layers per process ('normalization_1'); the application's own
            # layers have fixed names.
            layer_name = 'normalization' if isinstance(layer, keras.layers.Normalization) else layer.name
            tensors[f'{layer_name}/{short_name}'] = np.asarray(variable.numpy())
    return tensors


def keras_normalization(tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) on [0, 255] inputs that the Keras model's own Rescaling(1/255) + Normalization
    compute, without the imagenet-only extra Rescaling; None if the model has no Normalization."""
    mean = tensors.get('normalization/mean')
    variance = tensors.get('normalization/variance')
    if mean is None or variance is None:
        return None
    return np.asarray(mean) * 255.0, np.sqrt(np.asarray(variance)) * 255.0


def _normalization_notes(tensors: dict[str, np.ndarray]) -> list[str]:
    """Explains how the Keras model's in-model normalisation relates to ours (module docstring)."""
    from effnet_jax.data import normalization_constants
    imagenet_mean, imagenet_std = normalization_constants('efficientnet')
    found = keras_normalization(tensors)
    if found is None:
        return ['the Keras model has no Normalization layer; normalise inputs with '
                "normalization_constants('efficientnet')."]
    mean, _ = found
    variance = tensors['normalization/variance']
    published = np.allclose(mean, imagenet_mean, atol=1e-3) and np.allclose(variance, imagenet_std / 255, atol=1e-4)
    if published:
        return ['Keras Normalization holds the published ImageNet constants (variance = std, '
                "tensorflow/tensorflow#49930); effnet_jax's normalization_constants('efficientnet') "
                "reproduces what keras' weights='imagenet' model computes."]
    return [f'the Keras model normalises with mean {np.round(found[0], 3).tolist()} and std '
            f'{np.round(found[1], 3).tolist()} (on 0..255 inputs); effnet_jax drops that layer: normalise '
            'inputs with those constants to reproduce this Keras model, or with '
            "normalization_constants('efficientnet') for weights trained the reference's way."]


def from_keras_model(keras_model, model_name: str, *, strict: bool = True):
    """Converts a built Keras EfficientNet. Returns (model, variables, report); see core.convert."""
    tensors = keras_tensors(keras_model)
    return core.convert(model_name, tensors, NAMING, strict=strict, notes=_normalization_notes(tensors))


def build_keras_model(model_name: str, num_classes: int = 1000, input_shape: Any = None):
    """The Keras application matching an effnet_jax name, with random weights and logits output."""
    import keras
    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(f'Keras applications have no {model_name!r}; Keras provides '
                         f'{", ".join(KERAS_APPLICATIONS)}.')
    application = getattr(keras.applications, KERAS_APPLICATIONS[model_name])
    return application(weights=None, classes=num_classes, classifier_activation=None, input_shape=input_shape)


def classes_in_weights_file(path: str) -> int | None:
    """The classifier width stored in a Keras weights file, read directly with h5py (None if unknown).

    Legacy ``.h5`` files keep a 'predictions' group; Keras 3 ``.weights.h5`` files name the Dense layer
    'dense' (the only one in an EfficientNet), so the last 1-D tensor under such a group is its bias.
    """
    import h5py
    widths = []

    def visit(name, item):
        parts = name.split('/')
        if isinstance(item, h5py.Dataset) and item.ndim == 1 and any(
                p == 'predictions' or p.startswith('dense') for p in parts[:-1]):
            widths.append(item.shape[0])

    with h5py.File(path, 'r') as handle:
        handle.visititems(visit)
    return widths[-1] if widths else None


def from_keras_weights_file(path: str, model_name: str, *, strict: bool = True):
    """Converts a Keras EfficientNet weights file (``.h5`` or ``.weights.h5``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No Keras weights file at {path!r}.')
    num_classes = classes_in_weights_file(path) or 1000
    keras_model = build_keras_model(model_name, num_classes)
    try:
        keras_model.load_weights(path)
    except Exception as error:  # Keras raises ValueError / KeyError variants with long messages
        raise core.ConversionError(
            f'Keras could not load {path!r} into {KERAS_APPLICATIONS[model_name]} with {num_classes} '
            f'classes (is it a weights file of another model?): {error}') from error
    return from_keras_model(keras_model, model_name, strict=strict)
