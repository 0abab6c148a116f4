"""Bad input, tried systematically (hypothesis): configs, image arrays, image files, records.

Every case must end in a clear error that names the problem (ValueError / TypeError naming the
config field, predict.ImageError naming the file) or, for dataset records, in an error that the
input pipeline drops and counts (tests/data/test_pipeline.py checks the counting). Nothing here
compiles a model: validation and input checks run before any compute, which is the point.
"""
import io
import math
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for `configs`

from configs import quickstart  # noqa: E402
from effnet_jax import models, predict, sharding, train  # noqa: E402
from effnet_jax.data import preprocessing  # noqa: E402
from effnet_jax.models import efficientnet, layers  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope='module')
def mesh():
  return sharding.create_mesh()  # 8 CPU devices (tests/conftest.py)


def validation_error(config, mesh):
  """The ValueError message of validate_config, or None if the config is accepted."""
  try:
    train.validate_config(config, mesh)
  except ValueError as error:
    return str(error)
  return None


# ----------------------------------------------------------------------------------------------
# Configs

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**6, 10**6), st.sampled_from([0, -1, 1, 0.5, 1.0, -0.0]))
FRACTION_FIELDS = ('dropout_rate', 'survival_prob', 'bn_momentum', 'label_smoothing',
                   'moving_average_decay')
NON_NEGATIVE_FIELDS = ('base_learning_rate', 'warmup_epochs', 'weight_decay', 'mixup_alpha',
                       'randaug_num_layers', 'shuffle_buffer_size', 'checkpoint_max_to_keep',
                       'max_consecutive_nan_skips', 'num_epochs')


@SETTINGS
@given(field=st.sampled_from(FRACTION_FIELDS + NON_NEGATIVE_FIELDS), value=NUMBERS)
def test_numeric_fields_reject_out_of_range_values_naming_the_field(mesh, field, value):
  config = quickstart.get_config()
  try:
    config[field] = value
  except TypeError as error:  # a float into an int field: ml_collections names the field
    assert field in str(error)
    return
  message = validation_error(config, mesh)
  if message is not None:
    assert f'config.{field}' in message, message
    return
  # Accepted: then it is a sensible value.
  assert math.isfinite(value), (field, value)
  if field in FRACTION_FIELDS:
    assert 0 <= value <= 1, (field, value)
  elif field != 'num_epochs':
    assert value >= 0, (field, value)


@SETTINGS
@given(batch_size=st.integers(-64, 300), eval_batch_size=st.integers(-64, 300))
def test_batch_sizes_must_split_over_the_devices(mesh, batch_size, eval_batch_size):
  config = quickstart.get_config()
  config.batch_size, config.eval_batch_size = batch_size, eval_batch_size
  message = validation_error(config, mesh)
  splits = lambda size: size > 0 and size % mesh.size == 0  # noqa: E731
  if splits(batch_size) and splits(eval_batch_size):
    assert message is None
  else:
    assert message is not None and 'multiple of the number of devices (8)' in message
    assert 'config.batch_size' in message or 'config.eval_batch_size' in message


@SETTINGS
@given(name=st.one_of(st.text(max_size=30), st.sampled_from(
    ['efficientnet-b9', 'EfficientNet-B0', 'efficientnet_b0', 'b0', ' efficientnet-b0', ''])))
def test_unknown_model_names_fail_listing_the_known_ones(mesh, name):
  config = quickstart.get_config()
  config.model = name
  message = validation_error(config, mesh)
  if name in models.model_names(all_families=True) or name in ('efficientnet', 'efficientnet-lite'):
    return
  assert message is not None and 'efficientnet-b0' in message and '--config.model' in message


@SETTINGS
@given(phi=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 0)))
def test_phi_must_be_a_finite_non_negative_number(mesh, phi):
  config = quickstart.get_config()
  config.model, config.image_size = 'efficientnet', None
  config.phi = phi
  message = validation_error(config, mesh)
  if math.isfinite(phi) and 0 <= phi <= 20:
    assert message is None or 'phi' in message  # e.g. a resolution that no longer fits
  elif not math.isfinite(phi) or phi < 0:
    assert message is not None and 'phi' in message, phi


@SETTINGS
@given(field=st.sampled_from(['batch_size', 'num_train_steps', 'image_size', 'seed',
                              'base_learning_rate', 'phi', 'dropout_rate']),
       value=st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_wrongly_typed_values_are_refused_naming_the_field(field, value):
  config = quickstart.get_config()
  with pytest.raises(TypeError, match=field):
    config[field] = value


def test_main_reports_a_bad_config_as_one_error_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'effnet_jax.main', '--config', 'configs/quickstart.py',
       f'--workdir={tmp_path}', '--config.batch_size=-8', '--config.dropout_rate=1.5'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=''))
  assert result.returncode == 1
  assert 'error: config.dropout_rate=1.5 is invalid' in result.stderr
  assert 'Traceback' not in result.stderr


# ----------------------------------------------------------------------------------------------
# Image arrays at the model

DTYPES = st.sampled_from([np.float32, np.float16, np.float64, np.uint8, np.int32, np.bool_,
                          np.complex64])
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


@SETTINGS
@given(shape=SHAPES, dtype=DTYPES)
def test_model_input_is_checked_before_any_compute(shape, dtype):
  images = np.zeros(shape, dtype)
  valid = (len(shape) == 4 and shape[-1] == 3 and 0 not in shape and
           dtype not in (np.bool_, np.complex64))
  if valid:
    assert layers.as_image_batch(images, jnp.float32).dtype == jnp.float32
    return
  model = efficientnet.efficientnet(width=0.25, depth=0.5, resolution=16, dropout_rate=0.0,
                                    survival_prob=None, block_strings=efficientnet.B0_BLOCKS[:2],
                                    num_classes=10)
  # No variables are needed: the check is the network's first statement.
  with pytest.raises(ValueError, match=r'expected (images of shape \[batch, height, width, 3\]|'
                                       r'real-valued images)'):
    model.apply({'params': {}}, images)


@pytest.mark.parametrize('name', ['mobilenet-v1', 'mobilenet-v2', 'mobilenet-v3-small', 'resnet-50'])
def test_every_family_checks_its_input(name):
  model = models.create_model(name, num_classes=10)
  with pytest.raises(ValueError, match='channels-first'):
    model.apply({'params': {}}, np.zeros((2, 3, 32, 32), np.float32))


# ----------------------------------------------------------------------------------------------
# Image files at the predict command, and dataset records at the input pipeline


def encode(pixels: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=image_format)
  return buffer.getvalue()


@st.composite
def image_bytes(draw):
  """A real image (any format, mode, size), often damaged: truncated, overwritten or junk."""
  height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
  channels = draw(st.sampled_from([None, 3, 4]))
  image_format = draw(st.sampled_from(['JPEG', 'PNG', 'GIF', 'BMP', 'WEBP']))
  if image_format in ('JPEG', 'BMP') and channels == 4:
    channels = 3
  shape = (height, width) if channels is None else (height, width, channels)
  pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, shape, np.uint8)
  encoded = encode(pixels, image_format)
  damage = draw(st.sampled_from(['none', 'truncate', 'overwrite', 'junk', 'empty']))
  if damage == 'truncate':
    encoded = encoded[:draw(st.integers(0, len(encoded) - 1))]
  elif damage == 'overwrite':
    start = draw(st.integers(0, len(encoded) - 1))
    junk = draw(st.binary(min_size=1, max_size=64))
    encoded = encoded[:start] + junk + encoded[start + len(junk):]
  elif damage == 'junk':
    encoded = draw(st.binary(max_size=256))
  elif damage == 'empty':
    encoded = b''
  return encoded


@SETTINGS
@given(encoded=image_bytes(), image_size=st.sampled_from([1, 16, 33]))
def test_predict_loads_any_file_or_names_it_as_unreadable(tmp_path, encoded, image_size):
  path = tmp_path / 'input.img'
  path.write_bytes(encoded)
  try:
    image = predict.load_image(str(path), image_size, crop_padding=0)
  except predict.ImageError as error:
    assert str(error).startswith(f'{path}: not a readable image')
    return
  assert image.shape == (image_size, image_size, 3) and image.dtype == np.float32
  assert np.all(np.isfinite(image))


@SETTINGS
@given(encoded=image_bytes())
def test_undecodable_records_raise_what_the_pipeline_drops(encoded):
  """tf.data's ignore_errors drops elements whose preprocessing raises an OpError; the iterators
  count them (tests/data/test_pipeline.py). Anything else would end the input pipeline."""
  seed = tf.constant([0, 1], tf.int64)
  for preprocess in (lambda b: preprocessing.preprocess_for_eval(b, 16, 0),
                     lambda b: preprocessing.preprocess_for_train(b, seed, 16)):
    try:
      image = preprocess(tf.constant(encoded))
    except tf.errors.InvalidArgumentError:
      continue
    assert image.shape == (16, 16, 3) and bool(tf.reduce_all(tf.math.is_finite(image)))


def test_predict_command_exits_2_naming_every_bad_file(tmp_path, capsys):
  from effnet_jax import pretrained
  from effnet_jax.convert import core
  model = models.create_model('efficientnet-b0', num_classes=10)
  variables = core.traverse_util.unflatten_dict(
      {path: np.zeros(s.shape, np.float32) for path, s in core.variable_shapes(model).items()})
  weights = pretrained.save_pretrained(str(tmp_path / 'b0'), 'efficientnet-b0', variables,
                                       num_classes=10)
  (tmp_path / 'empty.jpg').write_bytes(b'')
  (tmp_path / 'half.png').write_bytes(encode(np.zeros((8, 8, 3), np.uint8), 'PNG')[:30])
  status = predict.main(['--model', 'efficientnet-b0', '--weights', weights,
                         str(tmp_path / 'empty.jpg'), str(tmp_path / 'half.png'),
                         str(tmp_path / 'missing.jpg')])
  stderr = capsys.readouterr().err
  assert status == 2
  for name in ('empty.jpg: not a readable image', 'half.png: not a readable image',
               'missing.jpg: no such file'):
    assert name in stderr
  assert 'Traceback' not in stderr
