"""Pretrained checkpoints: the directory format ``python -m effnet_jax.convert`` writes, and its loader.

A pretrained directory holds
  model.json    {"format": "effnet_jax.pretrained", "format_version": 1, "model_name": "efficientnet-b0",
                 "num_classes": 1000, "source": ..., "ema": ..., "notes": [...]}
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
                    extra_metadata: dict[str, Any] | None = None) -> str:
    """Writes ``variables`` ({'params', 'batch_stats'}) and model.json into ``directory``.

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
                'num_classes': int(num_classes), **(extra_metadata or {})}
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
    model = create_model(saved_name, num_classes=metadata['num_classes'], **model_overrides)
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
