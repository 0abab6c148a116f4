"""The built-in scikit-learn digits dataset prepares itself offline."""
import numpy as np

from effnet_jax import data
from effnet_jax.data import digits


def test_digits_builds_offline_with_documented_split(tmp_path):
  info = data.dataset_info('digits', str(tmp_path))
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (10, 1437, 360)
  assert info.eval_split == 'test'
  # Images are the scans scaled 0..16 -> 0..255; resize mode at 8 px without flip is identity.
  iterator = data.create_eval_iterator(name='digits', data_dir=str(tmp_path),
                                       per_host_batch_size=128, image_size=8, crop_padding=0,
                                       process_index=0, process_count=1)
  batches = list(iterator)
  images = np.concatenate([b['image'][b['mask'] == 1] for b in batches])
  labels = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  assert images.shape == (360, 8, 8, 3) and np.bincount(labels).min() >= 35
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  all_images, all_labels = digits.digits_images_and_labels()
  _, test_indices = digits.train_test_indices()
  expected = {(int(l), all_images[i].tobytes()) for i, l in zip(test_indices,
                                                                   all_labels[test_indices])}
  got = {(int(l), im.astype(np.uint8).tobytes()) for im, l in zip(images, labels)}
  assert got == expected


def test_digits_split_is_fixed_and_stratified():
  train, test = digits.train_test_indices()
  again_train, again_test = digits.train_test_indices()
  np.testing.assert_array_equal(train, again_train)
  assert len(train) == 1437 and len(test) == 360 and not set(train) & set(test)
  _, labels = digits.digits_images_and_labels()
  assert np.bincount(labels[test], minlength=10).min() >= 35


def test_digits_train_iterator_in_resize_mode(tmp_path):
  iterator = data.create_train_iterator(name='digits', data_dir=str(tmp_path),
                                        per_host_batch_size=32, image_size=32,
                                        train_crop='resize', random_flip=False,
                                        process_index=0, process_count=1)
  batch = next(iterator)
  assert batch['image'].shape == (32, 32, 32, 3) and batch['label'].max() < 10


def test_inspect_writes_a_grid_and_reports_speed(tmp_path, capsys):
  from PIL import Image

  from effnet_jax.data import inspect
  out = tmp_path / 'grid.png'
  inspect.main(['--dataset', 'digits', '--data-dir', str(tmp_path), '--image-size', '16',
                '--train-crop', 'resize', '--no-random-flip', '--batch-size', '8',
                '--out', str(out), '--benchmark-batches', '2'])
  assert Image.open(out).size[0] > 0
  assert 'images/sec' in capsys.readouterr().out
