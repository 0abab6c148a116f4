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

from effnet_jax import checkpoint, pretrained, sharding, train
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


def test_finetune_into_the_scanned_block_layout(tmp_path, digits_dir):
  """B5-B7's configs set scan_blocks: pretrained weights (plain layout) are stacked into it."""
  from effnet_jax.models import efficientnet
  blocks = 'r1_k3_s11_e1_i32_o16_se0.25,r3_k3_s22_e6_i16_o24_se0.25'  # blocks 2 and 3 form a scan group
  plain_config = tiny_config(digits_dir, block_strings=blocks, depth=1.0)
  model = train.create_model(plain_config, PRETRAINED_CLASSES)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
  directory = pretrained.save_pretrained(str(tmp_path / 'pretrained'), plain_config.model,
                                         jax.device_get(variables), num_classes=PRETRAINED_CLASSES,
                                         model_kwargs=mini_model_kwargs(plain_config))
  source = flat(variables['params'])
  workdir = str(tmp_path / 'run')
  config = tiny_config(digits_dir, block_strings=blocks, depth=1.0, scan_blocks=True, init_from=directory,
                       freeze_backbone_steps=2, num_train_steps=2)
  train.train_and_evaluate(config, workdir)

  scanned = restore_params(workdir, 2)
  assert 'blocks_2_to_3' in scanned and 'blocks_2' not in scanned
  loaded = flat(efficientnet.unscan_block_variables({'params': scanned}, model.blocks)['params'])
  assert set(loaded) == set(source)
  for name in source:
    if not name.startswith('classifier/'):  # loaded exactly, then untouched by the frozen steps
      np.testing.assert_array_equal(loaded[name], source[name], err_msg=name)
  with checkpoint.Checkpointer(os.path.join(workdir, train.CHECKPOINT_SUBDIR)) as checkpointer:
    assert checkpointer.read_metadata(2)['scan_blocks'] is True
  config.scan_blocks = False  # the same workdir in the other layout: refused before any compute
  with pytest.raises(ValueError, match=r'config.scan_blocks=True \(this run: False\)'):
    train.train_and_evaluate(config, workdir)


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
