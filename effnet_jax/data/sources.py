"""Finding a TFDS dataset, describing it, splitting it across hosts, and reading its records.

Records are read *undecoded* (the image stays as its encoded bytes) so that shuffling, skipping
to a resume position and splitting cost no image decoding; decoding happens in
`preprocessing.py` and only for examples that are actually used.
"""
from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from effnet_jax.data import digits
from effnet_jax.data import glyph_shapes
from effnet_jax.data import synthetic

# Names accepted for the built-in datasets, and the ones we prepare ourselves (offline).
DATASET_ALIASES = {'digits': digits.NAME}
AUTO_PREPARED_DATASETS = frozenset({digits.NAME, glyph_shapes.NAME, synthetic.NAME})


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset's files are not in data_dir; the message says how to prepare them."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset (counts are over whole splits)."""
  name: str
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  train_split: str
  eval_split: str


def canonical_name(name: str) -> str:
  return DATASET_ALIASES.get(name, name)


def preparation_instructions(name: str, data_dir: str | None) -> str:
  """The command (and manual step for ImageNet) that prepares `name` in `data_dir`."""
  data_dir_text = data_dir or '~/tensorflow_datasets'
  command = f'tfds build {name} --data_dir={data_dir_text}'
  if name.split('/')[0] == 'imagenet2012' or name.startswith('imagenet2012_'):
    manual_dir = os.path.join(data_dir_text, 'downloads', 'manual')
    return (f'Dataset {name!r} is not prepared in data_dir={data_dir_text!r}. ImageNet cannot be '
            f'downloaded automatically: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
            f'(from https://image-net.org) into {manual_dir}/ and run:\n    {command}')
  return (f'Dataset {name!r} is not prepared in data_dir={data_dir_text!r}. Prepare it with:\n'
          f'    {command}')


def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The TFDS builder of a *prepared* dataset; built-in offline datasets are prepared here.

  Raises DatasetNotPreparedError (with the command to run) if the files are missing.
  """
  name = canonical_name(name)
  if data_dir and not data_dir.startswith('gs://'):
    data_dir = os.path.expanduser(data_dir)  # configs may say '~/tensorflow_datasets'
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise DatasetNotPreparedError(
        f'{preparation_instructions(name, data_dir)}\n(TFDS does not know {name!r}: {error})'
    ) from error
  if not builder.is_prepared():
    if name in AUTO_PREPARED_DATASETS:
      builder.download_and_prepare()
    else:
      raise DatasetNotPreparedError(preparation_instructions(name, data_dir))
  return builder


def default_eval_split(builder: tfds.core.DatasetBuilder) -> str:
  """'validation' when the dataset has one (ImageNet), else 'test' (digits)."""
  splits = builder.info.splits
  for candidate in ('validation', 'test'):
    if candidate in splits:
      return candidate
  raise ValueError(f'{builder.name} has neither a validation nor a test split '
                   f'({list(splits)}); pass eval_split explicitly.')


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
  """Examples in `split`, which may be a sub-split such as 'train[:10%]'."""
  return builder.info.splits[split].num_examples


def dataset_info(name: str, data_dir: str | None, train_split: str = 'train',
                 eval_split: str | None = None, label_key: str = 'label') -> DatasetInfo:
  """num_classes and split sizes. eval_split None means 'validation' if present, else 'test'."""
  builder = load_builder(name, data_dir)
  eval_split = eval_split or default_eval_split(builder)
  label_feature = builder.info.features[label_key]
  return DatasetInfo(
      name=builder.name,
      num_classes=label_feature.num_classes,
      num_train_examples=num_examples(builder, train_split),
      num_eval_examples=num_examples(builder, eval_split),
      train_split=train_split,
      eval_split=eval_split)


def resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Default to this JAX process; validate explicit values."""
  if process_index is None or process_count is None:
    import jax  # Only needed for the defaults; keeps the module importable without devices.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index must be in [0, process_count), got {process_index} of {process_count}.')
  return process_index, process_count


def host_split(split: str, process_index: int, process_count: int):
  """This host's disjoint, contiguous slice of `split`; slices of all hosts cover it once.

  Sizes differ by at most one example (the first `N % process_count` hosts get one more).
  """
  return tfds.even_splits(split, n=process_count)[process_index]


def _parse_fn(builder: tfds.core.DatasetBuilder, image_key: str, label_key: str):
  features = builder.info.features
  decoders = {image_key: tfds.decode.SkipDecoding()}

  def parse(serialized):
    example = features.deserialize_example(serialized, decoders=decoders)
    return {'image': example[image_key], 'label': tf.cast(example[label_key], tf.int32)}

  return parse


def read_records(builder: tfds.core.DatasetBuilder, split, *, file_order_seed=None,
                 cycle_length: int = 16, image_key: str = 'image',
                 label_key: str = 'label') -> tf.data.Dataset:
  """Finite dataset of {'image': encoded bytes, 'label': int32} for `split` (one pass).

  With `file_order_seed` (a [2] int tensor, may be computed inside a tf.function) the order in
  which the split's files are visited is a seeded permutation; files are interleaved
  `cycle_length` at a time, deterministically, so the record order is a pure function of the seed.
  Datasets not stored as TFRecord fall back to TFDS's reader in fixed file order.
  """
  parse = _parse_fn(builder, image_key, label_key)
  if builder.info.file_format != tfds.core.file_adapters.FileFormat.TFRECORD:
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={image_key: tfds.decode.SkipDecoding()})
    return dataset.map(lambda ex: {'image': ex[image_key],
                                   'label': tf.cast(ex[label_key], tf.int32)})
  instructions = [fi for fi in builder.info.splits[split].file_instructions if fi.take > 0]
  filenames = tf.constant([fi.filename for fi in instructions], tf.string)
  skips = tf.constant([fi.skip for fi in instructions], tf.int64)
  takes = tf.constant([fi.take for fi in instructions], tf.int64)
  if file_order_seed is not None and len(instructions) > 1:
    order = tf.argsort(tf.random.stateless_uniform([len(instructions)], file_order_seed))
    filenames, skips, takes = (tf.gather(x, order) for x in (filenames, skips, takes))
  files = tf.data.Dataset.from_tensor_slices((filenames, skips, takes))
  records = files.interleave(
      lambda filename, skip, take: tf.data.TFRecordDataset(
          filename, buffer_size=8 * 1024 * 1024).skip(skip).take(take),
      cycle_length=max(1, min(cycle_length, len(instructions))), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
