"""Host splitting, exact eval, determinism, resuming, mixup, error handling of the pipeline."""
import itertools

import numpy as np
import pytest

from effnet_jax import data
from fake_datasets import (CORRUPT_BAD, CORRUPT_GOOD, NUM_TRAIN, NUM_VALIDATION,
                           VALIDATION_LABEL_OFFSET)

IMAGE_SIZE = 16


def train_iterator(data_dir, **overrides):
  kwargs = dict(name='fake_image_net', data_dir=data_dir, per_host_batch_size=4,
                image_size=IMAGE_SIZE, seed=0, process_index=0, process_count=1,
                shuffle_buffer_size=16)
  kwargs.update(overrides)
  return data.create_train_iterator(**kwargs)


def eval_labels(data_dir, process_index, process_count, batch_size=5):
  iterator = data.create_eval_iterator(
      name='fake_image_net', data_dir=data_dir, per_host_batch_size=batch_size,
      image_size=IMAGE_SIZE, process_index=process_index, process_count=process_count)
  batches = list(iterator)
  assert len(batches) == iterator.num_batches == len(iterator)
  for batch in batches:
    assert batch['image'].shape == (batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch['mask'].shape == batch['label'].shape == (batch_size,)
  labels = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  padding = np.concatenate([b['image'][b['mask'] == 0] for b in batches])
  assert np.all(padding == 0)
  return labels, len(batches)


def test_dataset_info(data_dir):
  info = data.dataset_info('fake_image_net', data_dir)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (
      1000, NUM_TRAIN, NUM_VALIDATION)
  assert info.eval_split == 'validation'


def test_two_hosts_eval_sets_are_disjoint_and_cover_the_split_once(data_dir):
  host0, batches0 = eval_labels(data_dir, 0, 2)
  host1, batches1 = eval_labels(data_dir, 1, 2)
  assert batches0 == batches1  # Every host runs the same number of eval steps.
  assert len(set(host0) & set(host1)) == 0
  everything = np.sort(np.concatenate([host0, host1]))
  np.testing.assert_array_equal(
      everything, np.arange(VALIDATION_LABEL_OFFSET, VALIDATION_LABEL_OFFSET + NUM_VALIDATION))


def test_single_host_eval_is_exact_and_reiterable(data_dir):
  first, _ = eval_labels(data_dir, 0, 1, batch_size=8)
  assert len(first) == NUM_VALIDATION == len(set(first))
  iterator = data.create_eval_iterator(name='fake_image_net', data_dir=data_dir,
                                       per_host_batch_size=8, image_size=IMAGE_SIZE,
                                       process_index=0, process_count=1)
  passes = [np.concatenate([b['label'] for b in iterator]) for _ in range(2)]
  np.testing.assert_array_equal(passes[0], passes[1])


def test_each_train_epoch_visits_every_host_example_once(data_dir):
  per_host = NUM_TRAIN // 2
  seen = []
  for host in (0, 1):
    iterator = train_iterator(data_dir, process_index=host, process_count=2)
    epochs = [np.concatenate([next(iterator)['label'] for _ in range(per_host // 4)])
              for _ in range(2)]
    assert len(set(epochs[0])) == per_host and set(epochs[0]) == set(epochs[1])
    assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled every epoch.
    seen.append(set(epochs[0]))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_TRAIN))


def test_train_batches_format(data_dir):
  batch = next(train_iterator(data_dir, augment_name='autoaugment'))
  assert set(batch) == {'image', 'label'}
  assert batch['image'].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
  take = lambda it: [next(it) for _ in range(3)]  # noqa: E731
  first = take(train_iterator(data_dir, augment_name='randaugment'))
  again = take(train_iterator(data_dir, augment_name='randaugment'))
  other = take(train_iterator(data_dir, augment_name='randaugment', seed=1))
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(a['image'], c['image']) for a, c in zip(first, other))


@pytest.mark.parametrize('options', [
    dict(),
    dict(augment_name='autoaugment', mixup_alpha=0.2, process_index=1, process_count=2),
])
def test_resume_at_step_n_equals_uninterrupted_run(data_dir, options):
  # 20 examples per host at batch 6: steps cross epoch boundaries at odd offsets.
  uninterrupted = list(itertools.islice(train_iterator(data_dir, per_host_batch_size=6,
                                                       **options), 9))
  for start_step in (4, 7):
    resumed = train_iterator(data_dir, per_host_batch_size=6, start_step=start_step, **options)
    assert resumed.step == start_step
    for expected in uninterrupted[start_step:]:
      batch = next(resumed)
      assert set(batch) == set(expected)
      for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])


def test_mixup_fields(data_dir):
  batch = next(train_iterator(data_dir, mixup_alpha=0.4, per_host_batch_size=6))
  np.testing.assert_array_equal(batch['mixup_label'], batch['label'][::-1])
  assert np.all((batch['mixup_weight'] >= 0.5) & (batch['mixup_weight'] <= 1.0))
  targets = np.asarray(data.mixup_one_hot(batch['label'] % 10, batch['mixup_label'] % 10,
                                          batch['mixup_weight'], 10))
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)


def test_undecodable_records_are_skipped_and_counted(data_dir):
  iterator = data.create_eval_iterator(name='fake_corrupt_images', data_dir=data_dir,
                                       per_host_batch_size=4, image_size=IMAGE_SIZE,
                                       process_index=0, process_count=1)
  labels = np.concatenate([b['label'][b['mask'] == 1] for b in iterator])
  np.testing.assert_array_equal(np.sort(labels), np.arange(CORRUPT_GOOD))
  assert iterator.num_skipped == CORRUPT_BAD
  train = data.create_train_iterator(
      name='fake_corrupt_images', data_dir=data_dir, per_host_batch_size=4,
      image_size=IMAGE_SIZE, process_index=0, process_count=1)
  labels = np.concatenate([next(train)['label'] for _ in range(CORRUPT_GOOD // 4 * 3)])
  assert set(labels) == set(range(CORRUPT_GOOD))
  assert train.num_skipped == 3 * CORRUPT_BAD


def test_missing_imagenet_names_the_preparation_steps(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError) as error:
    data.dataset_info('imagenet2012', str(tmp_path))
  message = str(error.value)
  assert 'tfds build imagenet2012 --data_dir=' + str(tmp_path) in message
  assert 'ILSVRC2012_img_train.tar' in message and 'downloads/manual' in message


def test_unknown_dataset_names_tfds_build(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError, match='tfds build no_such_dataset'):
    data.dataset_info('no_such_dataset', str(tmp_path))


@pytest.mark.parametrize('bad', [dict(augment_name='rand'), dict(train_crop='center'),
                                 dict(mixup_alpha=-1.0), dict(per_host_batch_size=0),
                                 dict(process_index=2, process_count=2)])
def test_invalid_arguments_say_what_to_change(data_dir, bad):
  with pytest.raises(ValueError):
    train_iterator(data_dir, **bad)


def test_normalization():
  mean, std = data.normalization_constants('efficientnet')
  np.testing.assert_allclose(mean, [123.675, 116.28, 103.53], rtol=1e-6)
  np.testing.assert_allclose(std, [58.395, 57.12, 57.375], rtol=1e-6)
  mean, std = data.normalization_constants('lite')
  np.testing.assert_array_equal(mean, [127, 127, 127])
  np.testing.assert_array_equal(std, [128, 128, 128])
  images = np.full((2, 4, 4, 3), 255, np.uint8)
  normalized = data.normalize_images(images, mean, std, dtype=np.float32)
  np.testing.assert_allclose(np.asarray(normalized), 1.0)
  with pytest.raises(ValueError, match='family'):
    data.normalization_constants('resnet')
