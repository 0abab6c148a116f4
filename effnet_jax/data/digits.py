"""scikit-learn's handwritten digits as a TFDS dataset, prepared offline on first use.

1797 real 8x8 scans (values 0..16) of the digits 0-9 (`sklearn.datasets.load_digits`, bundled
with scikit-learn, so nothing is downloaded). Stored as 8x8 uint8 RGB PNGs: value v becomes
round(v * 255 / 16), replicated to 3 channels. A fixed stratified split (seed 0) gives
1437 train / 360 test examples.

Importing this module registers the builder under the name 'sklearn_digits'; the pipeline also
accepts the alias 'digits'.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NAME = 'sklearn_digits'
NUM_TRAIN = 1437
NUM_TEST = 360
SPLIT_SEED = 0


def digits_images_and_labels() -> tuple[np.ndarray, np.ndarray]:
  """All 1797 digits as uint8 RGB [N, 8, 8, 3] and int64 labels [N]."""
  from sklearn import datasets  # Imported lazily: only needed to prepare the dataset.
  digits = datasets.load_digits()
  gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1), digits.target.astype(np.int64)


def train_test_indices() -> tuple[np.ndarray, np.ndarray]:
  """The fixed stratified split: indices of the 1437 train and 360 test digits."""
  from sklearn import model_selection
  _, labels = digits_images_and_labels()
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED)
  return np.sort(train), np.sort(test)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits 0-9 from scikit-learn (UCI optdigits test set), 8x8 RGB."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 3), encoding_format='png'),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    train, test = train_test_indices()
    return {'train': self._generate_examples(train), 'test': self._generate_examples(test)}

  def _generate_examples(self, indices):
    images, labels = digits_images_and_labels()
    for index in indices:
      yield int(index), {'image': images[index], 'label': int(labels[index])}
