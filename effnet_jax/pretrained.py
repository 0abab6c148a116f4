"""Pretrained checkpoints: the directory format ``python -m effnet_jax.convert`` writes, and its loader.

A pretrained directory holds
  model.json    {"format": "effnet_jax.pretrained", "format_version": 1, "model_name": "efficientnet-b0",
                 "num_classes": 1000, "model_kwargs": {...}, "source": ..., "ema": ..., "notes": [...]}
                model_kwargs (optional) are the ``create_model`` arguments beyond the name that change
                the architecture (width, depth, phi, block_strings, ...), so scaled variants reload too.
  variables/    an Orbax StandardCheckpointer pytree {'params': ..., 'batch_stats': ...} (float32)

``load_pretrained(name, directory) -> (model, variables)`` rebuilds the model with ``create_model`` and
restores the variables against that model's own shapes, so a directory of another model is refused
up front by name (and would otherwise fail on shapes), not silently half-loaded.

Images for these models are normalised by the caller, as in training:
``effnet_jax.data.normalize_images(images, *normalization_constants(family))`` with family
'efficientnet' for B models and 'lite' for Lite models (``model_family(name)``).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

FORMAT = 'effnet_jax.pretrained'
FORMAT_VERSION = 1
METADATA_FILE = 'model.json'
VARIABLES_DIR = 'variables'


def model_family(model_name: str) -> str:
    """The normalisation family ('efficientnet' or 'lite') of a model name."""
    from effnet_jax.models import resolve_model_spec
    return resolve_model_spec(model_name).family


def save_pretrained(directory: str, model_name: str, variables: dict, *, num_classes: int,
                    model_kwargs: dict[str, Any] | None = None,
                    extra_metadata: dict[str, Any] | None = None) -> str:
    """Writes ``variables`` ({'params', 'batch_stats'}) and model.json into ``directory``.

    ``model_kwargs``: the ``create_model`` arguments (JSON values) that rebuild the same architecture
    from ``model_name``, e.g. ``{'width': 0.5, 'depth': 0.25}``; None entries are dropped.

    The directory must not already hold a pretrained checkpoint (no silent overwrite). Returns the
    absolute path.
    """
    import orbax.checkpoint as ocp
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, METADATA_FILE)) or os.path.exists(
            os.path.join(directory, VARIABLES_DIR)):
        raise FileExistsError(f'{directory} already holds a pretrained checkpoint; choose a new --output.')
    os.makedirs(directory, exist_ok=True)
    state = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
    state = jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), state)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, VARIABLES_DIR), state)
    checkpointer.wait_until_finished()
    metadata = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'model_name': model_name,
                'num_classes': int(num_classes),
                'model_kwargs': {k: v for k, v in (model_kwargs or {}).items() if v is not None},
                **(extra_metadata or {})}
    with open(os.path.join(directory, METADATA_FILE), 'w') as handle:
        json.dump(metadata, handle, indent=2)
    return directory


def read_metadata(directory: str) -> dict:
    """model.json of a pretrained directory, validated."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{directory!r} is not a pretrained effnet_jax checkpoint (no {METADATA_FILE}); create one with '
            '`python -m effnet_jax.convert ... --output DIR`.')
    with open(path) as handle:
        metadata = json.load(handle)
    if metadata.get('format') != FORMAT or metadata.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: unsupported format {metadata.get("format")!r} version '
                         f'{metadata.get("format_version")!r}; expected {FORMAT!r} version {FORMAT_VERSION}.')
    return metadata


def load_pretrained(name: str | None, directory: str, **model_overrides):
    """Loads a pretrained directory. Returns (model, variables).

    Args:
      name: the model the caller expects ('efficientnet-b0'); a directory of any other model is refused.
        None accepts whatever model the directory holds.
      directory: written by ``save_pretrained`` / ``python -m effnet_jax.convert``.
      **model_overrides: passed to ``create_model`` (e.g. ``dtype=jnp.bfloat16``,
        ``depthwise_implementation``); they must not change variable shapes.
    """
    import orbax.checkpoint as ocp
    from effnet_jax.convert.core import variable_shapes
    from effnet_jax.models import create_model
    from flax import traverse_util

    directory = os.path.abspath(directory)
    metadata = read_metadata(directory)
    saved_name = metadata['model_name']
    if name is not None and name != saved_name:
        raise ValueError(f'{directory} holds weights of {saved_name!r}, not {name!r}. Pass --model {saved_name} '
                         f'(or load_pretrained({saved_name!r}, ...)), or convert weights for {name!r}.')
    model = create_model(saved_name, num_classes=metadata['num_classes'],
                         **{**metadata.get('model_kwargs', {}), **model_overrides})
    device = jax.local_devices(backend='cpu')[0] if jax.default_backend() == 'cpu' else jax.local_devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    target = traverse_util.unflatten_dict({
        path: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)
        for path, shape in variable_shapes(model).items()})
    target = {'params': target['params'], 'batch_stats': target.get('batch_stats', {})}
    try:
        variables = ocp.StandardCheckpointer().restore(os.path.join(directory, VARIABLES_DIR), target)
    except (ValueError, KeyError) as error:
        raise ValueError(f'{directory}: the stored variables do not fit {saved_name!r} with '
                         f'{metadata["num_classes"]} classes: {error}') from error
    return model, variables


def _describe(paths, limit: int = 12) -> str:
    names = ['/'.join(path) for path in sorted(paths)]
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def transfer_pretrained(directory: str, target_variables: dict, head: str = 'classifier'):
    """Pretrained weights placed into a model for fine-tuning. Returns (variables, reinitialised).

    ``target_variables`` ({'params', 'batch_stats'}) are the freshly initialised variables of the model
    being trained. Every variable outside the top-level ``head`` module must exist in the pretrained
    directory with the same shape (same family, width, depth, block strings; the input resolution may
    differ); otherwise a ValueError lists the offending tensors. The head is taken from the directory
    when its shapes fit (same number of classes) and kept freshly initialised otherwise;
    ``reinitialised`` names the variables that were not loaded.
    """
    from flax import traverse_util

    _, source = load_pretrained(None, directory)
    source = traverse_util.flatten_dict({'params': source['params'],
                                         'batch_stats': source.get('batch_stats', {})})
    target = traverse_util.flatten_dict({'params': target_variables['params'],
                                         'batch_stats': target_variables.get('batch_stats', {})})
    is_head = lambda path: len(path) > 1 and path[1] == head
    missing = [path for path in target if not is_head(path) and path not in source]
    unexpected = [path for path in source if not is_head(path) and path not in target]
    wrong_shape = [path for path in target if path in source and not is_head(path)
                   and tuple(source[path].shape) != tuple(target[path].shape)]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f'{len(missing)} missing from the checkpoint: {_describe(missing)}')
        if unexpected:
            problems.append(f'{len(unexpected)} not in the model: {_describe(unexpected)}')
        if wrong_shape:
            problems.append(f'{len(wrong_shape)} with other shapes: ' + _describe(wrong_shape) + ' ('
                            + '; '.join(f'{"/".join(p)} {tuple(source[p].shape)} vs {tuple(target[p].shape)}'
                                        for p in sorted(wrong_shape)[:3]) + ')')
        metadata = read_metadata(directory)
        raise ValueError(
            f'{directory} holds {metadata["model_name"]!r} {metadata.get("model_kwargs") or ""}, which does '
            f'not fit the model being trained: ' + '; '.join(problems) + '. Use the same model, width, '
            'depth and block_strings as the pretrained weights (only the classifier may differ).')
    head_paths = [path for path in target if is_head(path)]
    head_fits = all(path in source and tuple(source[path].shape) == tuple(target[path].shape)
                    for path in head_paths)
    merged = {path: (target[path] if is_head(path) and not head_fits else np.asarray(source[path]))
              for path in target}
    reinitialised = [] if head_fits else sorted('/'.join(path) for path in head_paths)
    variables = traverse_util.unflatten_dict(merged)
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}, reinitialised
