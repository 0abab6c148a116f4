"""Fixtures for the data tests: a data_dir with the fake datasets of fake_datasets.py."""
import pytest
import tensorflow_datasets as tfds

from fake_datasets import FakeCorruptImages, FakeImageNet


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A data_dir holding both fake datasets, each written as 3 shards per split."""
  directory = str(tmp_path_factory.mktemp('tfds'))
  config = tfds.download.DownloadConfig(num_shards=3)
  for builder_class in (FakeImageNet, FakeCorruptImages):
    builder_class(data_dir=directory).download_and_prepare(download_config=config)
  return directory
