"""tensorflow/tpu reference checkpoints (``model.ckpt-NNN`` / the released ``efficientnet-bX`` dirs).

Variable names (reference-spec §1.14) are
  {model}/stem/conv2d/kernel, {model}/stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}
  {model}/blocks_{i}/conv2d (expand), tpu_batch_normalization (bn0), depthwise_conv2d/depthwise_kernel,
      tpu_batch_normalization_1 (bn1), se/conv2d (reduce), se/conv2d_1 (expand), conv2d_1 (project),
      tpu_batch_normalization_2 (bn2)
  {model}/head/conv2d, {model}/head/tpu_batch_normalization, {model}/head/dense/{kernel,bias}
TF numbers same-type layers in creation order, so a block without the expansion conv (stage 1) calls
its project conv 'conv2d' and its BNs 'tpu_batch_normalization' and '_1'. {model} is the scope the
checkpoint was trained under (e.g. 'efficientnet-b0'); it is found in the file, not assumed.

Training checkpoints also hold an exponential moving average of every weight and BN statistic as
``<name>/ExponentialMovingAverage``; the reference evaluates (and the released checkpoints are meant
to be used) with those, hence ``ema=True``. Optimizer slots (RMSProp, Momentum) and the global step
are ignored.
"""
from __future__ import annotations

import os
import re

import numpy as np

from effnet_jax.convert import core

EMA_SUFFIX = '/ExponentialMovingAverage'

TOP_LEVEL_LAYERS = {
    'stem_conv': 'stem/conv2d',
    'stem_bn': 'stem/tpu_batch_normalization',
    'head_conv': 'head/conv2d',
    'head_bn': 'head/tpu_batch_normalization',
    'classifier': 'head/dense',
}
# TF numbers layers of one type per block in creation order; the expansion conv and bn0 come first.
BLOCK_LAYERS_WITH_EXPANSION = {
    'expand_conv': 'conv2d',
    'bn0': 'tpu_batch_normalization',
    'depthwise_conv': 'depthwise_conv2d',
    'bn1': 'tpu_batch_normalization_1',
    'se/reduce': 'se/conv2d',
    'se/expand': 'se/conv2d_1',
    'project_conv': 'conv2d_1',
    'bn2': 'tpu_batch_normalization_2',
}
BLOCK_LAYERS_WITHOUT_EXPANSION = {
    'depthwise_conv': 'depthwise_conv2d',
    'bn1': 'tpu_batch_normalization',
    'se/reduce': 'se/conv2d',
    'se/expand': 'se/conv2d_1',
    'project_conv': 'conv2d',
    'bn2': 'tpu_batch_normalization_1',
}
VARIABLES = {
    ('conv', 'kernel'): 'kernel',
    ('conv', 'bias'): 'bias',
    ('depthwise', 'kernel'): 'depthwise_kernel',
    ('dense', 'kernel'): 'kernel',
    ('dense', 'bias'): 'bias',
    ('batch_norm', 'scale'): 'gamma',
    ('batch_norm', 'bias'): 'beta',
    ('batch_norm', 'mean'): 'moving_mean',
    ('batch_norm', 'var'): 'moving_variance',
}
# Not weights: optimizer slots, step counters, and the EMA shadows not chosen.
_NOT_WEIGHTS = re.compile(r'(/RMSProp(_1)?|/Momentum|/ExponentialMovingAverage)$|^global_step$|'
                          r'^_CHECKPOINTABLE_OBJECT_GRAPH$|^beta[12]_power')


def naming(scope: str) -> core.Naming:
    """The name table for a checkpoint whose model variables live under ``scope`` ('efficientnet-b0')."""

    def layer_name(block: core.BlockPosition | None, module: str) -> str:
        if block is None:
            return f'{scope}/{TOP_LEVEL_LAYERS[module]}'
        table = BLOCK_LAYERS_WITH_EXPANSION if block.has_expansion else BLOCK_LAYERS_WITHOUT_EXPANSION
        return f'{scope}/blocks_{block.index}/{table[module]}'

    return core.Naming(
        framework='tensorflow checkpoint',
        module_name=layer_name,
        variable_names=VARIABLES,
        separator='/',
        layouts={'conv': 'same', 'dense': 'same', 'depthwise': 'hwc1'},
        ignore=lambda name: bool(_NOT_WEIGHTS.search(name)),
    )


def find_scope(names) -> str:
    """The model scope, from the one variable every EfficientNet has: '<scope>/stem/conv2d/kernel'."""
    scopes = sorted({name[:-len('/stem/conv2d/kernel')] for name in names
                     if name.endswith('/stem/conv2d/kernel')})
    if len(scopes) != 1:
        raise core.ConversionError(
            'Expected exactly one "<model>/stem/conv2d/kernel" variable in the checkpoint to tell the model '
            f'scope, found {scopes or "none"}. Is this an EfficientNet checkpoint of the tensorflow/tpu code?')
    return scopes[0]


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """{variable name: array} of a TF checkpoint (a prefix like .../model.ckpt-1000 or its directory)."""
    import tensorflow as tf
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f'No TF checkpoint (no "checkpoint" index file) in directory {path!r}.')
        path = latest
    try:
        reader = tf.train.load_checkpoint(path)
    except Exception as error:  # tf raises NotFoundError / DataLossError with opaque messages
        raise FileNotFoundError(f'Cannot read a TF checkpoint at {path!r}: {error}') from error
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def select_weights(tensors: dict[str, np.ndarray], ema: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """The raw weights, or with ``ema`` each weight's EMA shadow under the raw name.

    Weights that have no shadow keep their raw value and are listed in the returned notes; a
    checkpoint with no shadows at all is an error (it was exported without EMA).
    """
    if not ema:
        return tensors, []
    shadows = {name[:-len(EMA_SUFFIX)]: value for name, value in tensors.items() if name.endswith(EMA_SUFFIX)}
    if not shadows:
        raise core.ConversionError(
            'ema=True but the checkpoint has no "/ExponentialMovingAverage" variables; convert without --ema.')
    selected = dict(tensors)
    selected.update(shadows)
    for name in shadows:
        selected.pop(name + EMA_SUFFIX)
    raw_only = sorted(name for name in tensors if name not in shadows and not name.endswith(EMA_SUFFIX)
                      and not _NOT_WEIGHTS.search(name))
    notes = [f'{len(raw_only)} weights have no EMA shadow and were taken raw: {", ".join(raw_only[:10])}'
             + (' ...' if len(raw_only) > 10 else '')] if raw_only else []
    return selected, notes


def convert_tensors(tensors: dict[str, np.ndarray], model_name: str, *, ema: bool = False, strict: bool = True):
    """Converts an in-memory {name: array} dict with reference names. Returns (model, variables, report)."""
    selected, notes = select_weights(tensors, ema)
    scope = find_scope(selected)
    if scope != model_name:
        notes.append(f'checkpoint scope is {scope!r}, converted as {model_name!r}')
    notes.append('EMA weights' if ema else 'raw (non-EMA) weights')
    return core.convert(model_name, selected, naming(scope), strict=strict, notes=notes)


def convert_checkpoint(path: str, model_name: str, *, ema: bool = False, strict: bool = True):
    """Converts a TF checkpoint of the reference code. Returns (model, variables, report)."""
    return convert_tensors(read_checkpoint(path), model_name, ema=ema, strict=strict)
