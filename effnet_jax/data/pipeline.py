"""Per-host train and eval input pipelines over any TFDS image-classification dataset.

Batches are numpy dicts, per host:
  train: {'image': float32 [B, R, R, 3] in ~[0, 255], 'label': int32 [B]}
         + with mixup: 'mixup_label' int32 [B], 'mixup_weight' float32 [B] (see mixup.py)
  eval:  {'image', 'label', 'mask': float32 [B]} (mask 1 = real example, 0 = padding)

Host split: each host reads its own contiguous slice of the split (`tfds.even_splits`, sizes
differing by at most one); slices are disjoint and together cover the split exactly once.

Determinism and resuming (train)
--------------------------------
The train stream of a host is an endless sequence of epochs over its slice. Epoch e is
  1. the slice's files visited in an order permuted by a seed derived from (seed, host, e),
     interleaved deterministically, records left undecoded;
  2. a shuffle buffer (`shuffle_buffer_size`) seeded by (seed, host, e);
  3. each record tagged with its position i in the epoch.
Every random choice of preprocessing/augmentation for a record uses tf.random stateless ops with
a per-example seed derived from (seed, host, e, i), and mixup uses one derived from (seed, host,
step). So the stream is a pure function of (dataset, host slice, seed, options), independent of
thread scheduling.

Example k of the host stream (k = step * per_host_batch_size) is record k mod n of epoch
k // n (n = examples in the host slice). `create_train_iterator(start_step=N)` therefore starts
at epoch (N*B)//n and skips (N*B) mod n *undecoded* records of that epoch: the batches it yields
equal batches N, N+1, ... of an uninterrupted run. The skip reads (but does not decode) at most one
epoch of this host's records. The trainer only has to store the step in its checkpoint.

Undecodable records are dropped (`ignore_errors`), and the iterators count them (`num_skipped`)
and log a warning. A dropped training record shifts later batches by one example, so exact
resuming holds for datasets without undecodable records (prepared TFDS ImageNet has none).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from effnet_jax.data import mixup
from effnet_jax.data import preprocessing
from effnet_jax.data import sources

AUGMENT_NAMES = (None, 'autoaugment', 'randaugment')
_POSITION = '_position'  # Internal field: example position in the host stream.

# Salts that keep the seeds of different random decisions independent.
_FILE_ORDER, _SHUFFLE, _EXAMPLE, _MIXUP = 1, 2, 3, 4
_NEVER_ENDING_EPOCHS = 2**62


def _derive_seed(seed: int, purpose: int, *values) -> tf.Tensor:
  """A [2] int64 stateless seed from (seed, purpose, values...) by repeated fold_in."""
  derived = tf.constant([seed, purpose], tf.int64)
  for value in values:
    derived = tf.random.experimental.stateless_fold_in(derived, tf.cast(value, tf.int64))
  return derived


def _scalar_seed(seed_pair: tf.Tensor) -> tf.Tensor:
  """One non-negative int64 (what Dataset.shuffle takes) from a [2] seed."""
  return tf.random.stateless_uniform([], seed_pair, minval=0, maxval=2**62, dtype=tf.int64)


def _validate_common(per_host_batch_size: int, image_size: int) -> None:
  if not isinstance(per_host_batch_size, int) or per_host_batch_size <= 0:
    raise ValueError(f'per_host_batch_size must be a positive int, got {per_host_batch_size!r}.')
  if not isinstance(image_size, int) or image_size <= 0:
    raise ValueError(f'image_size must be a positive int, got {image_size!r}.')


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


# ---------------------------------------------------------------------------------------------
# Train
# ---------------------------------------------------------------------------------------------

def build_train_dataset(*, name: str, data_dir: str | None, split: str = 'train',
                        per_host_batch_size: int, image_size: int, seed: int = 0,
                        start_step: int = 0, augment_name: str | None = None,
                        randaug_num_layers: int = 2, randaug_magnitude: float = 10,
                        mixup_alpha: float = 0.0, train_crop: str = 'inception',
                        random_flip: bool = True, crop_padding=32,
                        process_index: int | None = None, process_count: int | None = None,
                        shuffle_buffer_size: int = 4096, cycle_length: int = 16,
                        image_key: str = 'image', label_key: str = 'label'):
  """The endless per-host train tf.data.Dataset of batches (with the internal '_position').

  Returns (dataset, examples_in_host_slice). Most callers want `create_train_iterator`.
  """
  _validate_common(per_host_batch_size, image_size)
  if augment_name not in AUGMENT_NAMES:
    raise ValueError(f'augment_name must be one of {AUGMENT_NAMES}, got {augment_name!r}.')
  if train_crop not in preprocessing.TRAIN_CROPS:
    raise ValueError(f'train_crop must be one of {preprocessing.TRAIN_CROPS}, got {train_crop!r}.')
  if mixup_alpha < 0:
    raise ValueError(f'mixup_alpha must be >= 0 (0 disables mixup), got {mixup_alpha}.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  crop_padding = preprocessing.resolve_crop_padding(crop_padding, image_size)
  process_index, process_count = sources.resolve_process(process_index, process_count)
  builder = sources.load_builder(name, data_dir)
  slice_spec = sources.host_split(split, process_index, process_count)
  slice_size = sources.num_examples(builder, slice_spec)
  if slice_size == 0:
    raise ValueError(f'Host {process_index} of {process_count} gets no examples of {split!r}.')

  def epoch_dataset(epoch):
    records = sources.read_records(
        builder, slice_spec, cycle_length=cycle_length, image_key=image_key,
        label_key=label_key,
        file_order_seed=_derive_seed(seed, _FILE_ORDER, process_index, epoch))
    shuffled = records.shuffle(
        shuffle_buffer_size, seed=_scalar_seed(_derive_seed(seed, _SHUFFLE, process_index, epoch)),
        reshuffle_each_iteration=False)
    return shuffled.enumerate().map(
        lambda index, example: {**example, _POSITION: epoch * slice_size + index})

  first_example = start_step * per_host_batch_size
  start_epoch, skip_in_epoch = divmod(first_example, slice_size)
  examples = tf.data.Dataset.range(start_epoch, _NEVER_ENDING_EPOCHS).flat_map(epoch_dataset)
  examples = examples.skip(skip_in_epoch)  # Undecoded: cheap.

  def preprocess(example):
    position = example[_POSITION]
    epoch, index = position // slice_size, position % slice_size
    image = preprocessing.preprocess_for_train(
        example['image'], _derive_seed(seed, _EXAMPLE, process_index, epoch, index),
        image_size, train_crop=train_crop, random_flip=random_flip, augment_name=augment_name,
        randaug_num_layers=randaug_num_layers, randaug_magnitude=randaug_magnitude,
        crop_padding=crop_padding)
    return {'image': image, 'label': example['label'], _POSITION: position}

  examples = examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  examples = examples.ignore_errors(log_warning=True)
  batches = examples.batch(per_host_batch_size, drop_remainder=True)
  if mixup_alpha > 0:
    batches = batches.enumerate(start=start_step).map(
        lambda step, batch: mixup.mixup_batch(
            batch, mixup_alpha, _derive_seed(seed, _MIXUP, process_index, step)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(_options()), slice_size


class TrainIterator:
  """Endless iterator of per-host numpy train batches, starting at `start_step`.

  Attributes: start_step, step (the step of the next batch), num_skipped (undecodable records
  dropped so far), examples_per_epoch (this host's slice size), dataset (the tf.data pipeline).
  """

  def __init__(self, dataset: tf.data.Dataset, *, start_step: int, per_host_batch_size: int,
               examples_per_epoch: int):
    self.dataset = dataset
    self.start_step = start_step
    self.step = start_step
    self.examples_per_epoch = examples_per_epoch
    self.num_skipped = 0
    self._batch_size = per_host_batch_size
    self._next_position = start_step * per_host_batch_size
    self._numpy_batches = dataset.as_numpy_iterator()

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self._numpy_batches))
    positions = batch.pop(_POSITION)
    skipped = int(positions[-1]) - self._next_position + 1 - self._batch_size
    if skipped > 0:
      self.num_skipped += skipped
      logging.warning('Skipped %d undecodable training record(s) (%d so far).', skipped,
                      self.num_skipped)
    self._next_position = int(positions[-1]) + 1
    self.step += 1
    return batch


def create_train_iterator(*, per_host_batch_size: int, start_step: int = 0,
                          **kwargs) -> TrainIterator:
  """Endless per-host train batches; `start_step=N` resumes exactly where step N begins.

  Keyword arguments are those of `build_train_dataset`: name, data_dir, split='train',
  image_size, seed=0, augment_name=None|'autoaugment'|'randaugment', randaug_num_layers=2,
  randaug_magnitude=10, mixup_alpha=0.0, train_crop='inception'|'resize', random_flip=True,
  crop_padding=32 (used by the crop fallback), process_index/process_count (default: this JAX
  process), shuffle_buffer_size=4096, cycle_length=16, image_key='image', label_key='label'.
  """
  dataset, slice_size = build_train_dataset(
      per_host_batch_size=per_host_batch_size, start_step=start_step, **kwargs)
  return TrainIterator(dataset, start_step=start_step, per_host_batch_size=per_host_batch_size,
                       examples_per_epoch=slice_size)


# ---------------------------------------------------------------------------------------------
# Eval
# ---------------------------------------------------------------------------------------------

def build_eval_dataset(*, name: str, data_dir: str | None, split: str | None = None,
                       per_host_batch_size: int, image_size: int, crop_padding=32,
                       process_index: int | None = None, process_count: int | None = None,
                       cycle_length: int = 16, image_key: str = 'image',
                       label_key: str = 'label'):
  """Finite per-host eval dataset of padded, masked batches.

  Every host yields the same number of batches, ceil(ceil(N / hosts) / B), so a multi-host
  eval step runs the same number of times everywhere; batches past a host's data are all padding.
  Returns (dataset, examples_in_host_slice, num_batches).
  """
  _validate_common(per_host_batch_size, image_size)
  crop_padding = preprocessing.resolve_crop_padding(crop_padding, image_size)
  process_index, process_count = sources.resolve_process(process_index, process_count)
  builder = sources.load_builder(name, data_dir)
  split = split or sources.default_eval_split(builder)
  total = sources.num_examples(builder, split)
  slice_spec = sources.host_split(split, process_index, process_count)
  slice_size = sources.num_examples(builder, slice_spec)
  num_batches = math.ceil(math.ceil(total / process_count) / per_host_batch_size)

  def preprocess(example):
    return {'image': preprocessing.preprocess_for_eval(example['image'], image_size, crop_padding),
            'label': example['label'], 'mask': tf.constant(1.0, tf.float32)}

  def pad_batch(batch):
    missing = per_host_batch_size - tf.shape(batch['label'])[0]
    return {key: tf.pad(value, [[0, missing]] + [[0, 0]] * (len(value.shape) - 1))
            for key, value in batch.items()}

  examples = sources.read_records(builder, slice_spec, cycle_length=cycle_length,
                                  image_key=image_key, label_key=label_key)
  examples = examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  examples = examples.ignore_errors(log_warning=True)
  real_batches = examples.batch(per_host_batch_size).map(pad_batch)
  padding_batch = {
      'image': tf.zeros([per_host_batch_size, image_size, image_size, 3], tf.float32),
      'label': tf.zeros([per_host_batch_size], tf.int32),
      'mask': tf.zeros([per_host_batch_size], tf.float32)}
  padding_batches = tf.data.Dataset.from_tensors(padding_batch).repeat()
  batches = real_batches.concatenate(padding_batches).take(num_batches)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(_options()), slice_size, num_batches


class EvalIterator:
  """Re-iterable, finite per-host eval batches; each pass sees every host example once.

  Attributes: num_examples (real examples of this host), num_batches (same on every host),
  num_skipped (undecodable records dropped in the last complete pass), dataset.
  """

  def __init__(self, dataset: tf.data.Dataset, *, num_examples: int, num_batches: int):
    self.dataset = dataset
    self.num_examples = num_examples
    self.num_batches = num_batches
    self.num_skipped = 0

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    real = 0
    for batch in self.dataset.as_numpy_iterator():
      real += int(batch['mask'].sum())
      yield batch
    self.num_skipped = self.num_examples - real
    if self.num_skipped:
      logging.warning('Skipped %d undecodable eval record(s) of %d.', self.num_skipped,
                      self.num_examples)


def create_eval_iterator(*, per_host_batch_size: int, **kwargs) -> EvalIterator:
  """Padded, masked per-host eval batches covering this host's slice exactly once.

  Keyword arguments are those of `build_eval_dataset`: name, data_dir, split (None: 'validation'
  if present else 'test'), image_size, crop_padding=32 (or 'size/7'), process_index,
  process_count, cycle_length=16, image_key='image', label_key='label'.
  """
  dataset, slice_size, num_batches = build_eval_dataset(
      per_host_batch_size=per_host_batch_size, **kwargs)
  return EvalIterator(dataset, num_examples=slice_size, num_batches=num_batches)
