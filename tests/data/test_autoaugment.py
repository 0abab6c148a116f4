"""Each AutoAugment / RandAugment op does what §3.4 says; the v0 table equals the spec."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from effnet_jax.data import autoaugment as aa

SEED = tf.constant([3, 4])

# reference-spec.md §3.4, typed as written there.
SPEC_POLICY_V0 = """
1 Equalize .8 1, ShearY .8 4 | 2 Color .4 9, Equalize .6 3 | 3 Color .4 1, Rotate .6 8 |
4 Solarize .8 3, Equalize .4 7 | 5 Solarize .4 2, Solarize .6 2 | 6 Color .2 0, Equalize .8 8 |
7 Equalize .4 8, SolarizeAdd .8 3 | 8 ShearX .2 9, Rotate .6 8 | 9 Color .6 1, Equalize 1.0 2 |
10 Invert .4 9, Rotate .6 0 | 11 Equalize 1.0 9, ShearY .6 3 | 12 Color .4 7, Equalize .6 0 |
13 Posterize .4 6, AutoContrast .4 7 | 14 Solarize .6 8, Color .6 9 | 15 Solarize .2 4, Rotate .8 9 |
16 Rotate 1.0 7, TranslateY .8 9 | 17 ShearX 0.0 0, Solarize .8 4 | 18 ShearY .8 0, Color .6 4 |
19 Color 1.0 0, Rotate .6 2 | 20 Equalize .8 4, Equalize 0.0 8 | 21 Equalize 1.0 4, AutoContrast .6 2 |
22 ShearY .4 7, SolarizeAdd .6 7 | 23 Posterize .8 2, Solarize .6 10 | 24 Solarize .6 8, Equalize .6 1 |
25 Color .8 6, Rotate .4 5
"""


def parse_spec_policy(text):
  rows = []
  for number, row in enumerate(text.replace('\n', ' ').split('|'), start=1):
    tokens = row.replace(',', ' ').split()
    assert int(tokens[0]) == number
    ops = tokens[1:]
    rows.append(tuple((ops[i], float(ops[i + 1]), int(ops[i + 2])) for i in (0, 3)))
  return tuple(rows)


def random_image(height=24, width=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run(op, image, *args):
  return op(tf.constant(image), *args).numpy()


def test_policy_v0_table_equals_spec():
  spec = parse_spec_policy(SPEC_POLICY_V0)
  assert len(spec) == 25
  assert aa.POLICY_V0 == spec


def test_hparams_match_spec():
  assert (aa.AUTOAUGMENT_HPARAMS.cutout_const, aa.AUTOAUGMENT_HPARAMS.translate_const) == (100, 250)
  assert (aa.RANDAUGMENT_HPARAMS.cutout_const, aa.RANDAUGMENT_HPARAMS.translate_const) == (40, 100)
  assert aa.AUTOAUGMENT_HPARAMS.fill_value == aa.RANDAUGMENT_HPARAMS.fill_value == 128
  assert len(aa.RANDAUGMENT_OPS) == 16


def test_level_to_arg_mapping():
  hp = aa.AUTOAUGMENT_HPARAMS
  assert float(aa.level_to_arg('Rotate', 10, hp)) == pytest.approx(30.0)
  assert float(aa.level_to_arg('ShearX', 5, hp)) == pytest.approx(0.15)
  assert float(aa.level_to_arg('TranslateY', 9, hp)) == pytest.approx(225.0)
  assert float(aa.level_to_arg('TranslateX', 10, aa.RANDAUGMENT_HPARAMS)) == pytest.approx(100.0)
  assert float(aa.level_to_arg('Color', 0, hp)) == pytest.approx(0.1)
  assert float(aa.level_to_arg('Sharpness', 10, hp)) == pytest.approx(1.9)
  assert float(aa.level_to_arg('Solarize', 3, hp)) == 76
  assert float(aa.level_to_arg('SolarizeAdd', 7, hp)) == 77
  assert float(aa.level_to_arg('Posterize', 6, hp)) == 2
  assert float(aa.level_to_arg('Posterize', 2, hp)) == 0  # The reference's black-image quirk.
  assert float(aa.level_to_arg('Cutout', 10, hp)) == 100
  assert aa.level_to_arg('Equalize', 7, hp) is None


def test_invert():
  image = random_image()
  np.testing.assert_array_equal(run(aa.invert, image), 255 - image)


@pytest.mark.parametrize('threshold', [0, 76, 128, 256])
def test_solarize_thresholds(threshold):
  image = random_image()
  expected = np.where(image < threshold, image, 255 - image)
  np.testing.assert_array_equal(run(aa.solarize, image, threshold), expected)


def test_solarize_add_only_below_128_and_saturates():
  image = random_image()
  expected = np.where(image < 128, np.minimum(image.astype(int) + 100, 255), image)
  np.testing.assert_array_equal(run(aa.solarize_add, image, 100), expected)


@pytest.mark.parametrize('bits', [0, 1, 2, 4, 8])
def test_posterize_keeps_stated_bits(bits):
  image = random_image()
  mask = (0xFF << (8 - bits)) & 0xFF
  np.testing.assert_array_equal(run(aa.posterize, image, bits), image & mask)


def test_equalize_matches_pil():
  image = (random_image(seed=2) // 3 + 40).astype(np.uint8)  # A narrow histogram.
  expected = np.asarray(ImageOps.equalize(Image.fromarray(image)))
  np.testing.assert_array_equal(run(aa.equalize, image), expected)


def test_equalize_of_constant_image_is_identity():
  image = np.full((8, 8, 3), 77, np.uint8)
  np.testing.assert_array_equal(run(aa.equalize, image), image)


def test_autocontrast_stretches_each_channel_to_full_range():
  image = random_image() // 4 + 60
  image[..., 2] = 99  # A constant channel stays as it is.
  result = run(aa.autocontrast, image)
  for channel in (0, 1):
    assert result[..., channel].min() == 0 and result[..., channel].max() == 255
    order = np.argsort(image[..., channel], axis=None, kind='stable')
    assert np.all(np.diff(result[..., channel].ravel()[order].astype(int)) >= 0)
  np.testing.assert_array_equal(result[..., 2], image[..., 2])


@pytest.mark.parametrize('op', [aa.rotate, aa.shear_x, aa.shear_y, aa.translate_x, aa.translate_y])
def test_geometric_ops_by_zero_are_identity(op):
  image = random_image()
  np.testing.assert_array_equal(run(op, image, 0.0), image)


def test_translate_moves_content_and_fills_gray():
  image = random_image()
  result = run(aa.translate_x, image, 5.0)
  np.testing.assert_array_equal(result[:, :-5], image[:, 5:])
  assert np.all(result[:, -5:] == 128)
  result = run(aa.translate_y, image, -3.0)
  np.testing.assert_array_equal(result[3:], image[:-3])
  assert np.all(result[:3] == 128)


def test_rotate_quarter_and_half_turns():
  image = random_image(9, 9)
  np.testing.assert_array_equal(run(aa.rotate, image, 180.0), image[::-1, ::-1])
  quarter = run(aa.rotate, image, 90.0)
  assert (np.array_equal(quarter, np.rot90(image, 1)) or
          np.array_equal(quarter, np.rot90(image, -1)))


def test_shear_x_shifts_rows_proportionally_to_y():
  image = random_image(10, 40)
  result = run(aa.shear_x, image, 1.0)  # Row y samples input columns x + y.
  for y in range(10):
    np.testing.assert_array_equal(result[y, :40 - y], image[y, y:])
    assert np.all(result[y, 40 - y:] == 128)


def test_cutout_fills_a_gray_square():
  image = np.zeros((40, 40, 3), np.uint8)
  result = run(aa.cutout, image, 5, SEED)
  changed = np.any(result != image, axis=-1)
  assert 0 < changed.sum() <= 10 * 10
  assert np.all(result[changed] == 128)
  rows, cols = np.nonzero(changed)
  assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10


@pytest.mark.parametrize('op', [aa.color, aa.contrast, aa.brightness, aa.sharpness])
def test_enhance_ops_with_factor_one_are_identity(op):
  image = random_image()
  np.testing.assert_array_equal(run(op, image, 1.0), image)


def test_enhance_ops_degenerate_images():
  image = random_image()
  np.testing.assert_array_equal(run(aa.brightness, image, 0.0), np.zeros_like(image))
  gray = run(aa.color, image, 0.0)
  assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])
  # Contrast's quirk: the flat image has value num_pixels / 256 (here 24*32/256 = 3).
  np.testing.assert_array_equal(run(aa.contrast, image, 0.0), np.full_like(image, 3))
  smooth = run(aa.sharpness, image, 0.0)
  np.testing.assert_array_equal(smooth[0], image[0])
  np.testing.assert_array_equal(smooth[:, -1], image[:, -1])
  assert smooth[1:-1, 1:-1].std() < image[1:-1, 1:-1].std()


def test_every_named_op_keeps_shape_and_dtype():
  image = tf.constant(random_image())
  for name in aa.RANDAUGMENT_OPS:
    result = aa.apply_op(name, image, 7, aa.RANDAUGMENT_HPARAMS, SEED)
    assert result.shape == image.shape and result.dtype == tf.uint8, name


def test_policies_are_deterministic_per_seed_and_vary_across_seeds():
  image = tf.constant(random_image(32, 32))
  for policy in (aa.autoaugment, lambda im, s: aa.randaugment(im, s, 2, 10)):
    first = [policy(image, tf.constant([i, 0])).numpy() for i in range(6)]
    again = [policy(image, tf.constant([i, 0])).numpy() for i in range(6)]
    for a, b in zip(first, again):
      np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in first}) > 2


def test_randaugment_with_zero_layers_is_identity_and_large_magnitudes_work():
  image = tf.constant(random_image())
  np.testing.assert_array_equal(aa.randaugment(image, SEED, 0, 10).numpy(), image.numpy())
  for i in range(8):
    assert aa.randaugment(image, tf.constant([i, 1]), 3, 28).shape == image.shape


def test_augment_image_rejects_unknown_names():
  with pytest.raises(ValueError, match='augment_name'):
    aa.augment_image(tf.zeros([4, 4, 3], tf.uint8), SEED, 'autoaug')
