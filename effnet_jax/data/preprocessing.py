"""Per-example image preprocessing in TF ops (reference-spec.md §3.2, §3.3).

Input is the *encoded* image (JPEG, PNG, ... bytes as stored by TFDS) so that JPEGs can be
decoded only inside the crop window (`tf.image.decode_and_crop_jpeg`), as the reference does;
other formats are fully decoded and then sliced. Output is float32 [size, size, 3] with values in
[0, 255] (bicubic overshoot is not clipped, as in the reference); normalisation happens on the
device (see `normalization.py`).

Resizing uses the legacy TF1 bicubic kernel (`ResizeBicubic` with half_pixel_centers=False), which
is what the reference's `tf.image.resize_bicubic` ran.
"""
from __future__ import annotations

import tensorflow as tf

from effnet_jax.data import autoaugment

TRAIN_CROPS = ('inception', 'resize')

# sample_distorted_bounding_box parameters of the reference (spec §3.2).
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 10


def resolve_crop_padding(crop_padding, image_size: int) -> int:
  """Eval crop padding in pixels: an int, or 'size/7' for round(image_size / 7).

  32 is what every published checkpoint was evaluated with; 'size/7' is the reference's
  post-2021-11 rule (crop fraction 0.875 at every size).
  """
  if crop_padding == 'size/7':
    return int(round(image_size / 7))
  if isinstance(crop_padding, int) and crop_padding >= 0:
    return crop_padding
  raise ValueError(
      f"crop_padding must be a non-negative int or 'size/7', got {crop_padding!r}.")


def resize_bicubic(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """[H, W, C] -> float32 [image_size, image_size, C], TF1 bicubic (no half-pixel centers)."""
  resized = tf.raw_ops.ResizeBicubic(
      images=tf.cast(image, tf.float32)[tf.newaxis], size=[image_size, image_size],
      align_corners=False, half_pixel_centers=False)[0]
  return tf.ensure_shape(resized, [image_size, image_size, 3])


def image_shape(image_bytes: tf.Tensor) -> tf.Tensor:
  """[height, width, 3] of an encoded image; JPEG headers are read without decoding."""
  return tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.concat([tf.io.extract_jpeg_shape(image_bytes)[:2], [3]], axis=0),
      lambda: tf.shape(decode_full(image_bytes)))


def decode_full(image_bytes: tf.Tensor) -> tf.Tensor:
  """Decode any supported format to uint8 RGB [H, W, 3] (grayscale is replicated)."""
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  return tf.ensure_shape(image, [None, None, 3])


def decode_window(image_bytes: tf.Tensor, offset_y, offset_x, height, width) -> tf.Tensor:
  """Decode only the window [offset_y:+height, offset_x:+width] (cheap for JPEG)."""
  window = tf.stack([offset_y, offset_x, height, width])

  def jpeg():
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():
    return decode_full(image_bytes)[offset_y:offset_y + height, offset_x:offset_x + width]

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  return tf.ensure_shape(image, [None, None, 3])


def center_crop_window(height, width, image_size: int, crop_padding: int):
  """Eval crop (spec §3.3): side = floor(size / (size + padding) * min(H, W)), centered.

  Returns (offset_y, offset_x, side) as int32 tensors. The side is at least 1 pixel so tiny
  images still produce an output (the reference would fail on them).
  """
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  # float32 arithmetic and truncation, exactly as the reference computes it.
  fraction = tf.constant(image_size / (image_size + crop_padding), tf.float32)
  side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  offset_y = (height - side + 1) // 2
  offset_x = (width - side + 1) // 2
  return offset_y, offset_x, side


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int,
                           crop_padding: int = 32) -> tf.Tensor:
  """Eval path: center crop (§3.3) then bicubic resize; float32 [size, size, 3]."""
  shape = image_shape(image_bytes)
  offset_y, offset_x, side = center_crop_window(shape[0], shape[1], image_size, crop_padding)
  crop = decode_window(image_bytes, offset_y, offset_x, side, side)
  return resize_bicubic(crop, image_size)


def sample_crop_window(shape, seed):
  """Random crop window (§3.2 step 1) for an image of `shape` [H, W, C].

  Returns int32 scalars (offset_y, offset_x, height, width) and a bool `sampler_failed`, true
  when the sampler gave up and returned the whole image. The whole image is the only bounding
  box, so min_object_covered=0.1 makes the effective minimum area 10%.
  """
  shape = tf.cast(shape, tf.int32)
  whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]], tf.float32)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=whole_image, seed=seed,
      min_object_covered=MIN_OBJECT_COVERED,
      aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=AREA_RANGE,
      max_attempts=MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  offset_y, offset_x, _ = tf.unstack(begin)
  crop_height, crop_width, _ = tf.unstack(size)
  sampler_failed = tf.reduce_all(tf.equal(shape, size))
  return offset_y, offset_x, crop_height, crop_width, sampler_failed


def decode_and_random_crop(image_bytes: tf.Tensor, image_size: int, seed,
                           crop_padding: int = 32) -> tf.Tensor:
  """Inception-style crop (§3.2 steps 1-3); float32 [size, size, 3].

  If the sampler gives up (returns the whole image) the eval center crop is used instead, as in
  the reference.
  """
  offset_y, offset_x, crop_height, crop_width, sampler_failed = sample_crop_window(
      image_shape(image_bytes), seed)

  def random_crop():
    return resize_bicubic(
        decode_window(image_bytes, offset_y, offset_x, crop_height, crop_width), image_size)

  def fallback():
    return decode_and_center_crop(image_bytes, image_size, crop_padding)

  return tf.cond(sampler_failed, fallback, random_crop)


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
  """Whole image resized to [size, size] (aspect not kept): for tiny non-photo datasets."""
  return resize_bicubic(decode_full(image_bytes), image_size)


def preprocess_for_train(image_bytes: tf.Tensor, seed, image_size: int,
                         train_crop: str = 'inception', random_flip: bool = True,
                         augment_name: str | None = None, randaug_num_layers: int = 2,
                         randaug_magnitude: float = 10, crop_padding: int = 32) -> tf.Tensor:
  """Crop/resize, flip, optional AutoAugment/RandAugment; float32 [size, size, 3] in ~[0, 255].

  `seed` ([2] int tensor) determines every random choice for this example.
  """
  crop_seed, flip_seed, augment_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  if train_crop == 'inception':
    image = decode_and_random_crop(image_bytes, image_size, crop_seed, crop_padding)
  elif train_crop == 'resize':
    image = decode_and_resize(image_bytes, image_size)
  else:
    raise ValueError(f'train_crop must be one of {TRAIN_CROPS}, got {train_crop!r}.')
  if random_flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if augment_name is not None:
    # The reference clips, truncates to uint8, augments and casts back (spec §3.2 step 5).
    image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
    image = autoaugment.augment_image(image, augment_seed, augment_name, randaug_num_layers,
                                      randaug_magnitude)
    image = tf.cast(image, tf.float32)
  return image


def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int,
                        crop_padding: int = 32) -> tf.Tensor:
  """Center crop (§3.3) and bicubic resize; float32 [size, size, 3]."""
  return decode_and_center_crop(image_bytes, image_size, crop_padding)
