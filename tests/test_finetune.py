"""Transfer learning: `config.init_from` (a pretrained directory) and `config.freeze_backbone_steps`.

The "pretrained" weights are a mini EfficientNet's random initialisation with 5 classes, saved the
way `python -m effnet_jax.convert` saves; fine-tuning targets the 10 digits classes, so the
classifier must be replaced and everything else loaded exactly.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from effnet_jax import pretrained, sharding, train
from test_train import IMAGE_SIZE, restore_params, tiny_config

PRETRAINED_CLASSES = 5


def mini_model_kwargs(config):
  return {'width': config.width, 'depth': config.depth,
          'block_strings': config.block_strings.split(',')}


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def pretrained_dir(tmp_path_factory, digits_dir):
  config = tiny_config(digits_dir)
  model = train.create_model(config, PRETRAINED_CLASSES)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
  directory = str(tmp_path_factory.mktemp('pretrained'))
  pretrained.save_pretrained(directory, config.model, jax.device_get(variables),
                             num_classes=PRETRAINED_CLASSES, model_kwargs=mini_model_kwargs(config))
  return directory


def flat(tree):
  return {'/'.join(path): np.asarray(value) for path, value in traverse_util.flatten_dict(tree).items()}


def test_load_pretrained_rebuilds_a_scaled_variant(pretrained_dir):
  model, variables = pretrained.load_pretrained('efficientnet-b0', pretrained_dir)
  assert model.num_classes == PRETRAINED_CLASSES
  assert len(model.blocks) == 2  # the saved block strings, not B0's seven stages
  assert variables['params']['classifier']['kernel'].shape[-1] == PRETRAINED_CLASSES


def test_finetune_loads_the_backbone_freezes_it_then_trains_it(tmp_path, digits_dir, pretrained_dir):
  _, source = pretrained.load_pretrained(None, pretrained_dir)
  source_params, source_stats = flat(source['params']), flat(source['batch_stats'])
  workdir = str(tmp_path)
  config = tiny_config(digits_dir, init_from=pretrained_dir, freeze_backbone_steps=2,
                       num_train_steps=2)
  train.train_and_evaluate(config, workdir)

  frozen = flat(restore_params(workdir, 2))
  assert frozen['classifier/kernel'].shape[-1] == 10  # a new head for the digits' classes
  backbone = [name for name in source_params if not name.startswith('classifier/')]
  assert backbone and set(frozen) == set(source_params)
  for name in backbone:  # loaded exactly, then untouched by the frozen steps
    np.testing.assert_array_equal(frozen[name], source_params[name], err_msg=name)
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, train.CHECKPOINT_SUBDIR, '2', 'state'))
  for name, value in flat(state['batch_stats']).items():  # inference-mode BN: statistics kept
    np.testing.assert_array_equal(value, source_stats[name], err_msg=name)

  config.num_train_steps = 4  # resume: steps 3 and 4 train the whole network
  train.train_and_evaluate(config, workdir)
  unfrozen = flat(restore_params(workdir, 4))
  changed = [name for name in backbone if not np.array_equal(unfrozen[name], source_params[name])]
  assert len(changed) > len(backbone) // 2


def test_weights_of_another_architecture_are_refused_listing_the_tensors(digits_dir, pretrained_dir):
  config = tiny_config(digits_dir, width=1.0)  # twice as many channels as the saved weights
  model = train.create_model(config, 10)
  target = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
  with pytest.raises(ValueError, match=r'43 with other shapes: .*blocks_0/bn1/mean \(16,\) vs \(32,\)') as error:
    pretrained.transfer_pretrained(pretrained_dir, target)
  assert 'only the classifier may differ' in str(error.value)


def test_init_from_a_directory_that_is_not_pretrained_fails_before_compute(tmp_path, digits_dir):
  config = tiny_config(digits_dir, init_from=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='python -m effnet_jax.convert'):
    train.validate_config(config, sharding.create_mesh())
