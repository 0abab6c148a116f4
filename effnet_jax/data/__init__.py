"""Input pipeline: TFDS + tf.data, reference preprocessing, AutoAugment/RandAugment, mixup.

Public API (what the trainer imports):
  dataset_info(name, data_dir, train_split='train', eval_split=None) -> DatasetInfo
  create_train_iterator(name=..., data_dir=..., per_host_batch_size=..., image_size=...,
                        seed=0, start_step=0, ...) -> endless iterator of numpy batches
  create_eval_iterator(name=..., data_dir=..., per_host_batch_size=..., image_size=...,
                       crop_padding=32, ...) -> re-iterable, padded + masked numpy batches
  normalization_constants(family) -> (mean, std);  normalize_images(images, mean, std, dtype)
  mixup_one_hot(labels, mixup_labels, mixup_weights, num_classes) -> soft targets
See pipeline.py for the batch formats and how determinism / resuming work.
"""
from effnet_jax.data import digits  # noqa: F401  (registers the 'sklearn_digits' builder)
from effnet_jax.data import glyph_shapes  # noqa: F401  (registers 'glyph_shapes', scaling study)
from effnet_jax.data.mixup import mixup_one_hot
from effnet_jax.data.normalization import normalization_constants, normalize_images
from effnet_jax.data.pipeline import (EvalIterator, TrainIterator, build_eval_dataset,
                                      build_train_dataset, create_eval_iterator,
                                      create_train_iterator)
from effnet_jax.data.sources import DatasetInfo, DatasetNotPreparedError, dataset_info

__all__ = [
    'DatasetInfo', 'DatasetNotPreparedError', 'EvalIterator', 'TrainIterator',
    'build_eval_dataset', 'build_train_dataset', 'create_eval_iterator', 'create_train_iterator',
    'dataset_info', 'mixup_one_hot', 'normalization_constants', 'normalize_images',
]
