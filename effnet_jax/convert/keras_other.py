"""Keras applications MobileNet, MobileNetV2, MobileNetV3Large/Small and ResNet50 -> effnet_jax.

Same two halves as every converter (``core``): Keras' tensors are read by ``keras.keras_tensors``
('layer/variable' names), and this module's name tables say which Keras layer holds each of our
variables. The EfficientNet ``core.Naming`` assumes EfficientNet's module names, so the walk over our
variables is repeated here (``convert_tensors``), reusing core's layouts, report and error.

    model, variables, report = from_keras_model(keras.applications.MobileNetV2(...), 'mobilenet-v2')

Differences the converter bridges:
  - Keras' post-pool 1x1 convs with bias (MobileNet 'conv_preds', MobileNetV3 'conv_2' and 'logits')
    are Dense layers here: their (1, 1, in, out) kernels become (in, out).
  - Keras' ResNet50 is the original ResNet (stride on the first 1x1 conv, biases on every conv,
    BN epsilon 1.001e-5): the converted model is ``create_model('resnet-50', **KERAS_RESNET)``.
  - MobileNetV3 rescales [0, 255] -> [-1, 1] inside the model by default (``include_preprocessing``);
    ours never does: feed [-1, 1] images (``build_keras_model`` builds Keras' model without it).
Only width-1.0 Keras models with these names are supported (Keras' α != 1 models are
``create_model(name, width=α)``; their channel rounding matches ours for the published α).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from effnet_jax.convert import core
from effnet_jax.convert.keras import keras_tensors
from effnet_jax.models import create_model

# Keras ResNet50 as effnet_jax overrides (effnet_jax.models.resnet docstring).
KERAS_RESNET = dict(stride_on='1x1', conv_bias=True, bn_epsilon=1.001e-5)
KERAS_APPLICATIONS = {
    'mobilenet-v1': 'MobileNet',
    'mobilenet-v2': 'MobileNetV2',
    'mobilenet-v3-large': 'MobileNetV3Large',
    'mobilenet-v3-small': 'MobileNetV3Small',
    'resnet-50': 'ResNet50',
}
# Our variable -> Keras variable, for batch norms and for everything else.
BATCH_NORM_VARIABLES = {'scale': 'gamma', 'bias': 'beta', 'mean': 'moving_mean', 'var': 'moving_variance'}
# Extra layout: a Keras 1x1 conv applied to pooled features, which is our Dense.
LAYOUTS = {**core.LAYOUT_TO_OURS, 'conv1x1_as_dense': lambda a: a.reshape(a.shape[-2:])}


def _mobilenet_v1_layer(module: list[str]) -> tuple[str, str]:
    top = {'stem_conv': 'conv1', 'stem_bn': 'conv1_bn', 'classifier': 'conv_preds'}
    if module[0] in top:
        return top[module[0]], 'conv1x1_as_dense' if module[0] == 'classifier' else 'same'
    block = int(module[0].split('_')[1]) + 1
    inner = {'depthwise_conv': 'conv_dw_{}', 'bn1': 'conv_dw_{}_bn', 'pointwise_conv': 'conv_pw_{}',
             'bn2': 'conv_pw_{}_bn'}[module[1]]
    return inner.format(block), 'hwc1' if module[1] == 'depthwise_conv' else 'same'


def _mobilenet_v2_layer(module: list[str]) -> tuple[str, str]:
    top = {'stem_conv': 'Conv1', 'stem_bn': 'bn_Conv1', 'head_conv': 'Conv_1', 'head_bn': 'Conv_1_bn',
           'classifier': 'predictions'}
    if module[0] in top:
        return top[module[0]], 'same'
    block = int(module[0].split('_')[1])
    prefix = 'expanded_conv_' if block == 0 else f'block_{block}_'
    inner = {'expand_conv': 'expand', 'bn0': 'expand_BN', 'depthwise_conv': 'depthwise', 'bn1': 'depthwise_BN',
             'project_conv': 'project', 'bn2': 'project_BN'}['/'.join(module[1:])]
    return prefix + inner, 'hwc1' if module[1] == 'depthwise_conv' else 'same'


def _mobilenet_v3_layer(module: list[str]) -> tuple[str, str]:
    top = {'stem_conv': 'conv', 'stem_bn': 'conv_bn', 'head_conv': 'conv_1', 'head_bn': 'conv_1_bn',
           'head_dense': 'conv_2', 'classifier': 'logits'}
    if module[0] in top:
        return top[module[0]], 'conv1x1_as_dense' if module[0] in ('head_dense', 'classifier') else 'same'
    block = int(module[0].split('_')[1])
    prefix = 'expanded_conv_' if block == 0 else f'expanded_conv_{block}_'
    inner = {'expand_conv': 'expand', 'bn0': 'expand_bn', 'depthwise_conv': 'depthwise', 'bn1': 'depthwise_bn',
             'se/reduce': 'squeeze_excite_conv', 'se/expand': 'squeeze_excite_conv_1', 'project_conv': 'project',
             'bn2': 'project_bn'}['/'.join(module[1:])]
    return prefix + inner, 'hwc1' if module[1] == 'depthwise_conv' else 'same'


def _resnet_layer_factory(model):
    """Keras names a bottleneck 'conv{stage + 1}_block{repeat + 1}' (stages conv2..conv5)."""
    names, repeat, previous = {}, 0, None
    for index, spec in enumerate(model.blocks):
        repeat = repeat + 1 if spec.stage == previous else 0
        previous = spec.stage
        names[f'blocks_{index}'] = f'conv{spec.stage + 1}_block{repeat + 1}'
    inner = {'shortcut_conv': '0_conv', 'shortcut_bn': '0_bn', 'conv1': '1_conv', 'bn1': '1_bn',
             'conv2': '2_conv', 'bn2': '2_bn', 'conv3': '3_conv', 'bn3': '3_bn'}

    def layer(module: list[str]) -> tuple[str, str]:
        top = {'stem_conv': 'conv1_conv', 'stem_bn': 'conv1_bn', 'classifier': 'predictions'}
        if module[0] in top:
            return top[module[0]], 'same'
        return f'{names[module[0]]}_{inner[module[1]]}', 'same'

    return layer


def _layer_namer(model_name: str, model):
    if model_name == 'mobilenet-v1':
        return _mobilenet_v1_layer
    if model_name == 'mobilenet-v2':
        return _mobilenet_v2_layer
    if model_name.startswith('mobilenet-v3'):
        return _mobilenet_v3_layer
    if model_name == 'resnet-50':
        return _resnet_layer_factory(model)
    raise ValueError(f'No Keras naming for {model_name!r}; supported: {", ".join(KERAS_APPLICATIONS)}.')


_BATCH_NORM = re.compile(r'(^|_)bn\d*$')


def source_for(path: core.OurPath, layer_namer) -> tuple[str, str]:
    """(Keras tensor name, layout) for one of our variable paths."""
    _, *module, variable = path
    layer, layout = layer_namer(module)
    if _BATCH_NORM.search(module[-1]):
        return f'{layer}/{BATCH_NORM_VARIABLES[variable]}', 'same'
    return f'{layer}/{variable}', layout if variable == 'kernel' else 'same'


def model_overrides(model_name: str) -> dict[str, Any]:
    """How our model must be built to hold a Keras application's weights."""
    return dict(KERAS_RESNET) if model_name.startswith('resnet') else {}


def convert_tensors(model_name: str, tensors: Mapping[str, np.ndarray], *, num_classes: int | None = None,
                    strict: bool = True, notes: list[str] | None = None):
    """Builds our variables for ``model_name`` from Keras tensors ('layer/variable' -> array).

    Returns (model, variables, report) like ``core.convert``; raises ``core.ConversionError`` listing
    every missing, wrongly shaped or (with ``strict``) unexpected tensor.
    """
    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(f'Keras applications have no {model_name!r}; this converter knows '
                         f'{", ".join(KERAS_APPLICATIONS)}.')
    classifier_bias = {'mobilenet-v1': 'conv_preds', 'mobilenet-v3-large': 'logits',
                       'mobilenet-v3-small': 'logits'}.get(model_name, 'predictions') + '/bias'
    if num_classes is None:
        num_classes = int(np.shape(tensors[classifier_bias])[0]) if classifier_bias in tensors else 1000
    model = create_model(model_name, num_classes=num_classes, **model_overrides(model_name))
    layer_namer = _layer_namer(model_name, model)
    flat_variables, loaded, missing, mismatched, wrong_shape = {}, {}, [], [], set()
    for path, target in core.variable_shapes(model).items():
        source_name, layout = source_for(path, layer_namer)
        our_name = '/'.join(path)
        if source_name not in tensors:
            missing.append(f'{our_name} <- {source_name}')
            continue
        source = np.asarray(tensors[source_name])
        value = LAYOUTS[layout](source)
        if value.shape != tuple(target.shape):
            mismatched.append(f'{source_name}: shape {source.shape} (as ours {value.shape}), '
                              f'{our_name} needs {tuple(target.shape)}')
            wrong_shape.add(source_name)
            continue
        flat_variables[path] = np.asarray(value, np.float32)
        loaded[source_name] = our_name
    leftover = [name for name in tensors if name not in loaded and name not in wrong_shape]
    ignored = [name for name in leftover if name.split('/')[0].startswith(('normalization', 'rescaling'))]
    unexpected = [f'{name} {tuple(np.shape(tensors[name]))}' for name in leftover if name not in ignored]
    report = core.ConversionReport('keras', model_name, loaded, missing, mismatched, unexpected, ignored,
                                   list(notes or []))
    if missing or mismatched or (strict and unexpected):
        raise core.ConversionError(f'Cannot convert to {model_name}:\n{report.summary()}')
    return model, traverse_util.unflatten_dict(flat_variables), report


def _input_note(model_name: str) -> list[str]:
    if model_name.startswith('resnet'):
        return ["Keras ResNet50 expects 'caffe' inputs (RGB->BGR, minus ImageNet mean in 0..255, no "
                'scaling); converted as the original ResNet (stride on the 1x1 conv, conv biases).']
    return ['MobileNets expect inputs scaled to [-1, 1] (x / 127.5 - 1).']


def from_keras_model(keras_model, model_name: str, *, strict: bool = True):
    """Converts a built Keras application. Returns (model, variables, report)."""
    return convert_tensors(model_name, keras_tensors(keras_model), strict=strict, notes=_input_note(model_name))


def build_keras_model(model_name: str, num_classes: int = 1000, input_shape: Any = None):
    """The Keras application for an effnet_jax name, random weights, logits out, no in-model rescaling."""
    import keras
    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(f'Keras applications have no {model_name!r}; supported: {", ".join(KERAS_APPLICATIONS)}.')
    kwargs = dict(weights=None, classes=num_classes, classifier_activation=None, input_shape=input_shape)
    if model_name.startswith('mobilenet-v3'):
        kwargs['include_preprocessing'] = False
    return getattr(keras.applications, KERAS_APPLICATIONS[model_name])(**kwargs)


def from_keras_weights_file(path: str, model_name: str, *, num_classes: int = 1000, strict: bool = True):
    """Converts a Keras weights file (``.h5`` or ``.weights.h5``) of one of these applications.

    The file is loaded into Keras' own model (only Keras can match a Keras 3 file's variable order).
    MobileNetV3 files were saved from the model with the in-model Rescaling, which has no weights, so
    they load into the one built here as well.
    """
    keras_model = build_keras_model(model_name, num_classes)
    try:
        keras_model.load_weights(path)
    except Exception as error:  # Keras raises ValueError / KeyError variants with long messages
        raise core.ConversionError(f'Keras could not load {path!r} into {KERAS_APPLICATIONS[model_name]} '
                                   f'with {num_classes} classes: {error}') from error
    return from_keras_model(keras_model, model_name, strict=strict)
