"""configs/: every file loads, is locked, validates against an 8-device mesh; variant fields."""
import pathlib
import sys

import pytest
from ml_collections import config_flags  # noqa: F401  (config_flags parses 'file.py:arg')

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import importlib  # noqa: E402

from effnet_jax import models, optim, sharding, checkpoint, train  # noqa: E402

CONFIG_NAMES = ['default', 'quickstart', 'phi', 'scaling_small'] + [f'b{i}' for i in range(8)]
RESOLUTIONS = [224, 240, 260, 300, 380, 456, 528, 600]


def load(name, *args):
  return importlib.import_module(f'configs.{name}').get_config(*args)


@pytest.fixture(scope='module')
def mesh():
  return sharding.create_mesh()


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_loads_is_locked_and_validates(name, mesh):
  config = load(name)
  for field in ('model', 'phi', 'dataset', 'data_dir', 'batch_size', 'num_train_steps',
                'num_epochs', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                'bn_group', 'dtype', 'seed', 'image_size', 'augment_name', 'mixup_alpha',
                'train_crop', 'random_flip', 'eval_crop_padding', 'eval_batch_size', 'nan_policy'):
    assert field in config, field
  for defaults in (optim.CONFIG_DEFAULTS, sharding.CONFIG_DEFAULTS, checkpoint.CONFIG_DEFAULTS):
    assert set(defaults) <= set(config.keys())
  with pytest.raises(AttributeError):
    config.batchsize = 3  # locked: typos are errors
  plan = train.validate_config(config, mesh)
  assert plan.image_size > 0


@pytest.mark.parametrize('index', range(8))
def test_b_configs(index):
  config = load(f'b{index}')
  assert config.model == f'efficientnet-b{index}'
  assert config.image_size == RESOLUTIONS[index]
  assert models.resolve_model_spec(config.model).resolution == config.image_size
  assert config.batch_size == 4096 and config.num_epochs == 350
  assert config.augment_name == 'autoaugment'
  assert config.base_learning_rate * config.batch_size / 256 == pytest.approx(0.256)
  assert config.dropout_rate is None  # the variant's dropout
  assert config.bn_group == 'reference'
  large = index >= 5  # B5-B7: a quarter of the memory and a 2x faster compile (README, Performance)
  assert config.remat is large and config.scan_blocks is large


@pytest.mark.parametrize('phi, large', [(4.0, False), (5.0, True), (6.0, True)])
def test_phi_configs_save_memory_from_b5_width(phi, large):
  config = load('phi', str(phi))  # width 1.1^phi: 1.46 (B4-like), 1.61, 1.77
  assert config.remat is large and config.scan_blocks is large


def test_phi_zero_equals_b0_multipliers():
  config = load('phi', '0')
  spec = models.resolve_model_spec(config.model, phi=config.phi)
  b0 = models.resolve_model_spec('efficientnet-b0')
  assert (spec.width, spec.depth, spec.resolution) == (b0.width, b0.depth, b0.resolution)
  assert config.image_size == 224


def test_phi_argument_sets_model_and_resolution():
  config = load('phi', '2.5')
  assert config.phi == 2.5 and config.model == 'efficientnet'
  assert config.image_size == models.resolve_model_spec('efficientnet', phi=2.5).resolution
  with pytest.raises(ValueError, match='configs/phi.py:2.5'):
    load('phi', 'large')


def parse_config_flags(*args):
  """Parses --config flags as effnet_jax.main does (override flags come from the argv)."""
  from absl import flags
  argv = [sys.argv[0], *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'test', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_config_flags_parse_phi_argument_and_overrides():
  config = parse_config_flags(f'--config={REPO_ROOT}/configs/phi.py:1.5', '--config.batch_size=256',
                              '--config.bn_group=16', '--config.data_dir=gs://b/tfds')
  assert config.phi == 1.5 and config.batch_size == 256
  assert config.bn_group == '16' and config.data_dir == 'gs://b/tfds'
  with pytest.raises(Exception, match='batchsize'):
    parse_config_flags(f'--config={REPO_ROOT}/configs/b0.py', '--config.batchsize=8')


def test_num_train_steps_wins_over_epochs():
  config = load('default')
  assert train.total_train_steps(config, 1_281_167) == 218_949  # 350 epochs at 2048 (§2.1)
  config.num_train_steps = 10
  assert train.total_train_steps(config, 1_281_167) == 10
