"""Normalisation constants and the on-device normalisation the trainer applies.

The input pipeline ships un-normalised images (values in [0, 255]) so the host-to-device
transfer and the pipeline stay model-agnostic; the model family decides the constants
(reference-spec.md §3.2 step 7).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# ImageNet mean / std of [0, 1] images, scaled to [0, 255] inputs.
IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Lite, EdgeTPU and CondConv checkpoints use one constant for every channel.
LITE_MEAN_RGB = (127.0, 127.0, 127.0)
LITE_STD_RGB = (128.0, 128.0, 128.0)

# MobileNets (Keras applications, TF-slim): inputs scaled to [-1, 1].
MOBILENET_MEAN_RGB = (127.5, 127.5, 127.5)
MOBILENET_STD_RGB = (127.5, 127.5, 127.5)

_CONSTANTS = {
    'efficientnet': (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB),
    'lite': (LITE_MEAN_RGB, LITE_STD_RGB),
    'edgetpu': (LITE_MEAN_RGB, LITE_STD_RGB),
    'condconv': (LITE_MEAN_RGB, LITE_STD_RGB),
    **{name: (MOBILENET_MEAN_RGB, MOBILENET_STD_RGB) for name in (
        'mobilenet-v1', 'mobilenet-v2', 'mobilenet-v3-large', 'mobilenet-v3-small')},
    # ResNets default to torchvision's layout and preprocessing (models/resnet.py).
    **{f'resnet-{layers}': (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB) for layers in (50, 101, 152, 200)},
}


def normalization_constants(family: str) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std), each float32 [3], for images with values in [0, 255].

  family: 'efficientnet' and the ResNets (ImageNet mean/std x 255), 'lite' / 'edgetpu' / 'condconv'
  (127, 128), the MobileNets (127.5, 127.5: inputs in [-1, 1]).
  """
  if family not in _CONSTANTS:
    raise ValueError(f'Unknown model family {family!r}; expected one of {sorted(_CONSTANTS)}.')
  mean, std = _CONSTANTS[family]
  return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def normalize_images(images, mean, std, dtype=jnp.float32):
  """(images - mean) / std over the last (channel) axis, computed in float32, cast to dtype.

  images: [..., 3] in [0, 255] (uint8 or float); mean, std: [3]. Runs on device inside jit.
  """
  images = jnp.asarray(images, jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images - mean) / std).astype(dtype)
