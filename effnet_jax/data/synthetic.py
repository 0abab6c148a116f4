"""'synthetic_photos': 512 ImageNet-like JPEGs for measuring the input pipeline offline.

Random crops (random size and aspect ratio, rescaled to 200..500 px sides like typical ImageNet
images) of scikit-image's sample photos (chelsea, coffee, astronaut, rocket) when scikit-image is
installed, else of smooth random noise; JPEG quality 90; 1000 classes, random labels. Prepared on
first use by `benchmark.py`; not meant for training.
"""
from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds

NAME = 'synthetic_photos'
NUM_TRAIN = 512
NUM_VALIDATION = 64


def source_photos(rng: np.random.Generator) -> list[np.ndarray]:
  try:
    from skimage import data as sample_images
  except ImportError:
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return [np.kron(noise, np.ones((8, 8, 1), np.uint8))]  # 512x512 blocky noise.
  return [sample_images.chelsea(), sample_images.coffee(), sample_images.astronaut(),
          sample_images.rocket()]


def random_photo_jpeg(photos: list[np.ndarray], rng: np.random.Generator) -> bytes:
  from PIL import Image
  photo = photos[rng.integers(len(photos))]
  height, width = photo.shape[:2]
  crop_height = rng.integers(height // 2, height + 1)
  crop_width = rng.integers(width // 2, width + 1)
  top, left = rng.integers(height - crop_height + 1), rng.integers(width - crop_width + 1)
  crop = Image.fromarray(photo[top:top + crop_height, left:left + crop_width])
  out_height, out_width = rng.integers(200, 501, size=2)
  buffer = io.BytesIO()
  crop.resize((int(out_width), int(out_height)), Image.BILINEAR).save(
      buffer, format='JPEG', quality=90)
  return buffer.getvalue()


class SyntheticPhotos(tfds.core.GeneratorBasedBuilder):
  """ImageNet-format JPEGs made from bundled sample photos."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=1000),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(NUM_TRAIN, seed=0),
            'validation': self._generate_examples(NUM_VALIDATION, seed=1)}

  def _generate_examples(self, count: int, seed: int):
    rng = np.random.default_rng(seed)
    photos = source_photos(rng)
    for index in range(count):
      yield index, {'image': random_photo_jpeg(photos, rng), 'label': int(rng.integers(1000))}
