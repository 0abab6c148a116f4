"""Train crop statistics and the exact eval crop (reference-spec.md §3.2, §3.3)."""
import numpy as np
import pytest
import tensorflow as tf

from effnet_jax.data import preprocessing
from fake_datasets import encode


def known_image(height=50, width=70):
  rng = np.random.default_rng(1)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def expected_center_crop(pixels, image_size, crop_padding):
  """§3.3 in numpy: side = floor(size/(size+pad) * min(H, W)), offsets ((H-side+1)//2, ...)."""
  height, width = pixels.shape[:2]
  side = int(np.float32(image_size / (image_size + crop_padding)) * np.float32(min(height, width)))
  top, left = (height - side + 1) // 2, (width - side + 1) // 2
  return pixels[top:top + side, left:left + side]


def legacy_bicubic(pixels, image_size):
  return tf.raw_ops.ResizeBicubic(images=tf.cast(pixels, tf.float32)[None],
                                  size=[image_size, image_size], align_corners=False,
                                  half_pixel_centers=False)[0].numpy()


def test_train_crop_area_and_aspect_ratio_over_many_samples():
  crop_window = tf.function(preprocessing.sample_crop_window)
  shape = tf.constant([480, 640, 3])
  areas, ratios, failures = [], [], 0
  for index in range(400):
    _, _, height, width, failed = crop_window(shape, tf.constant([index, 7]))
    failures += int(failed)
    if not failed:
      areas.append(int(height) * int(width) / (480 * 640))
      ratios.append(int(width) / int(height))
  areas, ratios = np.array(areas), np.array(ratios)
  assert failures < 40
  assert areas.min() >= 0.1 - 1e-3 and areas.max() <= 1.0
  assert areas.min() < 0.2 and areas.max() > 0.8  # The whole range is used.
  # Integer rounding of the sampled box may move the ratio slightly past the bounds.
  assert ratios.min() >= 0.75 * 0.98 and ratios.max() <= 4 / 3 * 1.02


@pytest.mark.parametrize('crop_padding', [32, 0, 'size/7'])
def test_eval_crop_equals_formula_pixel_for_pixel_png(crop_padding):
  pixels = known_image()
  image_size = 24
  padding = preprocessing.resolve_crop_padding(crop_padding, image_size)
  result = preprocessing.preprocess_for_eval(tf.constant(encode(pixels, 'PNG')), image_size,
                                             padding).numpy()
  expected = legacy_bicubic(expected_center_crop(pixels, image_size, padding), image_size)
  np.testing.assert_array_equal(result, expected)


def test_eval_crop_grayscale_jpeg_equals_formula_pixel_for_pixel():
  image_bytes = encode(known_image(61, 90)[..., 0])
  decoded = tf.io.decode_jpeg(image_bytes, channels=3).numpy()
  result = preprocessing.preprocess_for_eval(tf.constant(image_bytes), 32, 32).numpy()
  expected = legacy_bicubic(expected_center_crop(decoded, 32, 32), 32)
  np.testing.assert_array_equal(result, expected)


def test_eval_crop_color_jpeg_close_to_decode_then_crop():
  """decode_and_crop_jpeg upsamples chroma without the neighbours outside the window, so colour
  JPEGs differ from decode-then-slice near the window edge (as in the reference); the window
  itself is the same."""
  image_bytes = encode(known_image(61, 90))
  decoded = tf.io.decode_jpeg(image_bytes, channels=3).numpy()
  result = preprocessing.preprocess_for_eval(tf.constant(image_bytes), 32, 32).numpy()
  expected = legacy_bicubic(expected_center_crop(decoded, 32, 32), 32)
  assert np.abs(result - expected).mean() < 2.0
  np.testing.assert_allclose(result[4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-3)


def test_crop_padding_options():
  assert preprocessing.resolve_crop_padding(32, 600) == 32
  sizes = [224, 240, 260, 300, 380, 456, 528, 600, 672, 800]
  assert [preprocessing.resolve_crop_padding('size/7', s) for s in sizes] == [
      32, 34, 37, 43, 54, 65, 75, 86, 96, 114]
  with pytest.raises(ValueError, match='crop_padding'):
    preprocessing.resolve_crop_padding(-1, 224)


@pytest.mark.parametrize('shape,channels', [((5, 7), 3), ((40, 30), 1), ((1, 1), 3)])
def test_train_preprocessing_handles_tiny_and_grayscale_images(shape, channels):
  pixels = np.full(shape + (channels,), 200, np.uint8)
  image_bytes = tf.constant(encode(pixels[..., 0] if channels == 1 else pixels))
  for index in range(5):
    image = preprocessing.preprocess_for_train(image_bytes, tf.constant([index, 0]), 16,
                                               augment_name='randaugment')
    assert image.shape == (16, 16, 3) and image.dtype == tf.float32


def test_resize_mode_without_flip_is_plain_bicubic_resize():
  pixels = known_image(8, 8)
  image = preprocessing.preprocess_for_train(tf.constant(encode(pixels, 'PNG')),
                                             tf.constant([0, 0]), 32, train_crop='resize',
                                             random_flip=False)
  np.testing.assert_array_equal(image.numpy(), legacy_bicubic(pixels, 32))


def test_flip_is_random_and_horizontal():
  pixels = known_image(8, 8)
  image_bytes = tf.constant(encode(pixels, 'PNG'))
  plain = legacy_bicubic(pixels, 8)
  outcomes = set()
  for index in range(20):
    image = preprocessing.preprocess_for_train(image_bytes, tf.constant([index, 1]), 8,
                                               train_crop='resize').numpy()
    if np.array_equal(image, plain):
      outcomes.add('plain')
    else:
      np.testing.assert_array_equal(image, plain[:, ::-1])
      outcomes.add('flipped')
  assert outcomes == {'plain', 'flipped'}
