"""Tiny ImageNet-format TFDS datasets built in a temp dir: nothing is downloaded.

'fake_image_net': JPEG images of assorted sizes and aspect ratios, some grayscale, some tiny
(5x7), one PNG. Labels are unique per example (label = example id, 1000 classes) so tests can
identify examples from labels alone. 'fake_corrupt_images': a few good JPEGs and undecodable ones.
"""
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NUM_TRAIN = 40
NUM_VALIDATION = 23
VALIDATION_LABEL_OFFSET = 500
CORRUPT_GOOD, CORRUPT_BAD = 8, 2


def encode(pixels: np.ndarray, image_format: str = 'JPEG') -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=image_format, quality=90)
  return buffer.getvalue()


def assorted_image(index: int, rng: np.random.Generator) -> bytes:
  """Example `index`: mostly random-size RGB JPEGs, plus grayscale, tiny and PNG images."""
  if index % 10 == 3:
    return encode(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))  # Tiny.
  height, width = rng.integers(24, 160, size=2)
  if index % 10 == 5:
    return encode(rng.integers(0, 256, (height, width), dtype=np.uint8))  # Grayscale JPEG.
  pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  if index % 10 == 7:
    return encode(pixels, 'PNG')
  return encode(pixels)


def features():
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=1000),
  })


class FakeImageNet(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=features())

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(0, NUM_TRAIN),
            'validation': self._generate_examples(VALIDATION_LABEL_OFFSET, NUM_VALIDATION)}

  def _generate_examples(self, first_label, count):
    rng = np.random.default_rng(first_label)
    for index in range(count):
      yield index, {'image': assorted_image(index, rng), 'label': first_label + index}


class FakeCorruptImages(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=features())

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    for index in range(CORRUPT_GOOD):
      yield index, {'image': encode(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)),
                    'label': index}
    yield 'bad_jpeg', {'image': b'\xff\xd8\xff\xe0' + b'\x00' * 50, 'label': 998}
    yield 'bad_bytes', {'image': b'this is not an image', 'label': 999}
