"""AutoAugment policy 'v0' and RandAugment as TensorFlow ops on uint8 images.

Written from reference-spec.md §3.4-3.5 (what the tensorflow/tpu EfficientNet reference does), not
copied from any implementation. All ops take and return a uint8 tensor of shape [H, W, 3].

Randomness is stateless: every random choice takes a `seed` (shape [2] int32/int64 tensor) so an
augmented example is a pure function of (image, seed). The pipeline derives the seed from
(global seed, epoch, position in epoch), which is what makes training input reproducible and
resumable.

Conventions shared with the reference:
- geometric ops (Rotate, ShearX/Y, TranslateX/Y) sample with nearest-neighbour interpolation and
  fill uncovered pixels with the gray `fill_value` (128);
- "enhance" ops (Color, Contrast, Brightness, Sharpness) blend a degenerate image with the
  original: out = degenerate + factor * (image - degenerate), clipped to [0, 255];
- Contrast keeps the reference's quirk: the "mean" it blends towards is num_pixels / 256 (the sum
  of a 256-bin histogram divided by 256), not the mean intensity.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import tensorflow as tf

MAX_LEVEL = 10.0


@dataclasses.dataclass(frozen=True)
class AugmentHParams:
  """Constants that turn a level into an op argument (spec §3.4 / §3.5)."""
  cutout_const: int
  translate_const: int
  fill_value: int = 128


AUTOAUGMENT_HPARAMS = AugmentHParams(cutout_const=100, translate_const=250)
RANDAUGMENT_HPARAMS = AugmentHParams(cutout_const=40, translate_const=100)

# AutoAugment policy 'v0' (spec §3.4): 25 sub-policies of two (op name, probability, level) each.
POLICY_V0: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)

# RandAugment's 16 candidate ops (spec §3.5), in the reference's order.
RANDAUGMENT_OPS: tuple[str, ...] = (
    'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color', 'Contrast',
    'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Cutout',
    'SolarizeAdd')


# --------------------------------------------------------------------------------------------
# Pixel ops
# --------------------------------------------------------------------------------------------

def _to_uint8(image_float: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(image_float, 0.0, 255.0), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
  """v -> 255 - v."""
  return 255 - image


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
  """Invert the pixels whose value is >= threshold; keep the ones below."""
  threshold = tf.cast(threshold, tf.int32)
  as_int = tf.cast(image, tf.int32)
  return tf.cast(tf.where(as_int < threshold, as_int, 255 - as_int), tf.uint8)


def solarize_add(image: tf.Tensor, addition, threshold: int = 128) -> tf.Tensor:
  """Add `addition` (clipped to [0, 255]) to the pixels below threshold; keep the others."""
  as_int = tf.cast(image, tf.int32)
  added = tf.clip_by_value(as_int + tf.cast(addition, tf.int32), 0, 255)
  return tf.cast(tf.where(as_int < threshold, added, as_int), tf.uint8)


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
  """Keep the `bits` most significant bits of every value (0 bits -> black image).

  Bits are clamped to [0, 8]: RandAugment magnitudes above 10 (M=17, 28 in the reference README)
  would otherwise ask for more than 8 bits, which the reference leaves undefined.
  """
  shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  as_int = tf.cast(image, tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(as_int, shift), shift), tf.uint8)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Per channel, stretch [min, max] linearly to [0, 255]; constant channels are unchanged."""
  def stretch(channel):
    channel = tf.cast(channel, tf.float32)
    low, high = tf.reduce_min(channel), tf.reduce_max(channel)
    # Multiply before dividing so that the maximum maps to exactly 255.
    stretched = tf.clip_by_value((channel - low) * 255.0 / tf.maximum(high - low, 1.0), 0.0, 255.0)
    return tf.where(high > low, stretched, channel)

  channels = [stretch(image[..., c]) for c in range(3)]
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Per-channel histogram equalization with PIL's ImageOps.equalize lookup-table rule.

  step = (number of pixels - count of the last occupied bin) // 255; if step is 0 the channel is
  returned unchanged, otherwise value v maps to (cumulative count below v + step // 2) // step.
  """
  def equalize_channel(channel):
    channel = tf.cast(channel, tf.int32)
    histogram = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
    occupied = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(occupied) - occupied[-1]) // 255
    safe_step = tf.maximum(step, 1)
    cumulative_before = tf.concat([[0], tf.cumsum(histogram)[:-1]], axis=0)
    lut = tf.clip_by_value((cumulative_before + safe_step // 2) // safe_step, 0, 255)
    return tf.where(step > 0, tf.gather(lut, channel), channel)

  channels = [equalize_channel(image[..., c]) for c in range(3)]
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate) in float, clipped and cast back to uint8.

  factor 0 gives the degenerate image, 1 the original, > 1 extrapolates away from degenerate.
  """
  degenerate = tf.cast(degenerate, tf.float32)
  blended = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
  return _to_uint8(blended)


def color(image: tf.Tensor, factor) -> tf.Tensor:
  """Saturation: blend with the grayscale version of the image."""
  gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
  return blend(gray, image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with a flat gray image; the reference's gray level is num_pixels / 256 (quirk kept)."""
  gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)
  histogram = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
  quirky_mean = tf.reduce_sum(tf.cast(histogram, tf.float32)) / 256.0
  degenerate = tf.cast(tf.clip_by_value(quirky_mean, 0.0, 255.0), tf.uint8)
  degenerate = tf.fill(tf.shape(image), degenerate)
  return blend(degenerate, image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with black: factor scales every value."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with a smoothed image (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13, border pixels kept)."""
  as_float = tf.cast(image, tf.float32)[tf.newaxis]
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  smoothed = tf.nn.depthwise_conv2d(as_float, kernel, strides=[1, 1, 1, 1], padding='VALID')
  smoothed = tf.round(tf.clip_by_value(smoothed, 0.0, 255.0))[0]
  # Put the smoothed interior back into the original frame so the 1-pixel border is unchanged.
  interior = tf.pad(tf.ones_like(smoothed), [[1, 1], [1, 1], [0, 0]])
  smoothed = tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior > 0, smoothed, tf.cast(image, tf.float32))
  return blend(degenerate, image, factor)


def cutout(image: tf.Tensor, half_size, seed, fill_value: int = 128) -> tf.Tensor:
  """Fill a square of side 2*half_size (clipped at the borders) at a random center with gray."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  center_y = tf.random.stateless_uniform([], seed_y, 0, height, dtype=tf.int32)
  center_x = tf.random.stateless_uniform([], seed_x, 0, width, dtype=tf.int32)
  half_size = tf.cast(half_size, tf.int32)
  rows = tf.range(height)[:, tf.newaxis]
  cols = tf.range(width)[tf.newaxis, :]
  inside = ((rows >= center_y - half_size) & (rows < center_y + half_size) &
            (cols >= center_x - half_size) & (cols < center_x + half_size))
  return tf.where(inside[..., tf.newaxis], tf.cast(fill_value, image.dtype), image)


# --------------------------------------------------------------------------------------------
# Geometric ops: one projective transform each, nearest neighbour, gray fill.
# --------------------------------------------------------------------------------------------

def _transform(image: tf.Tensor, matrix: Sequence, fill_value: int) -> tf.Tensor:
  """Apply an 8-parameter projective transform [a0..a2, b0..b2, c0, c1].

  Output pixel (x, y) samples the input at ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k),
  k = c0 x + c1 y + 1; samples outside the image get `fill_value`.
  """
  matrix = tf.cast(tf.stack([tf.cast(m, tf.float32) for m in matrix]), tf.float32)
  transformed = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[tf.newaxis],
      transforms=matrix[tf.newaxis],
      output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(fill_value, tf.float32),
      interpolation='NEAREST',
      fill_mode='CONSTANT')
  return tf.cast(transformed[0], image.dtype)


def rotate(image: tf.Tensor, degrees, fill_value: int = 128) -> tf.Tensor:
  """Rotate counter-clockwise by `degrees` about the image center."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cos, sin = tf.cos(radians), tf.sin(radians)
  # Inverse map: rotate the output coordinate back around the center (x_c, y_c).
  x_c, y_c = (width - 1) / 2.0, (height - 1) / 2.0
  offset_x = x_c - (cos * x_c - sin * y_c)
  offset_y = y_c - (sin * x_c + cos * y_c)
  return _transform(image, [cos, -sin, offset_x, sin, cos, offset_y, 0.0, 0.0], fill_value)


def shear_x(image: tf.Tensor, level, fill_value: int = 128) -> tf.Tensor:
  """Output (x, y) samples input (x + level * y, y)."""
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], fill_value)


def shear_y(image: tf.Tensor, level, fill_value: int = 128) -> tf.Tensor:
  """Output (x, y) samples input (x, level * x + y)."""
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], fill_value)


def translate_x(image: tf.Tensor, pixels, fill_value: int = 128) -> tf.Tensor:
  """Output (x, y) samples input (x + pixels, y): content moves left by `pixels`."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], fill_value)


def translate_y(image: tf.Tensor, pixels, fill_value: int = 128) -> tf.Tensor:
  """Output (x, y) samples input (x, y + pixels): content moves up by `pixels`."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], fill_value)


# --------------------------------------------------------------------------------------------
# Level -> argument (spec §3.4) and the op table.
# --------------------------------------------------------------------------------------------

def _random_sign(value, seed) -> tf.Tensor:
  """Negate `value` with probability 1/2."""
  negate = tf.random.stateless_uniform([], seed) < 0.5
  value = tf.cast(value, tf.float32)
  return tf.where(negate, -value, value)


def level_to_arg(name: str, level, hparams: AugmentHParams):
  """The op argument for `level` in [0, MAX_LEVEL] (a number or a scalar tensor).

  Computed in float64 so that the integer arguments equal Python's int(level / 10 * const).
  Returns a float64 or int32 scalar tensor, or None for ops without argument; the random sign of
  Rotate/Shear/Translate is applied later.
  """
  fraction = tf.cast(level, tf.float64) / MAX_LEVEL
  as_int = lambda value: tf.cast(tf.math.floor(value), tf.int32)  # noqa: E731
  if name == 'Rotate':
    return fraction * 30.0
  if name in ('ShearX', 'ShearY'):
    return fraction * 0.3
  if name in ('TranslateX', 'TranslateY'):
    return fraction * float(hparams.translate_const)
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return fraction * 1.8 + 0.1
  if name == 'Solarize':
    return as_int(fraction * 256)
  if name == 'SolarizeAdd':
    return as_int(fraction * 110)
  if name == 'Posterize':
    return as_int(fraction * 4)
  if name == 'Cutout':
    return as_int(fraction * hparams.cutout_const)
  if name in ('AutoContrast', 'Equalize', 'Invert'):
    return None
  raise ValueError(f'Unknown augmentation op {name!r}.')


SIGNED_OPS = frozenset({'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY'})


def apply_op(name: str, image: tf.Tensor, level: float, hparams: AugmentHParams,
             seed) -> tf.Tensor:
  """Apply op `name` at `level`; `seed` drives the random sign / cutout position."""
  arg = level_to_arg(name, level, hparams)
  if arg is not None and arg.dtype == tf.float64:
    arg = tf.cast(arg, tf.float32)
  if name in SIGNED_OPS:
    arg = _random_sign(arg, seed)
  fill = hparams.fill_value
  ops: dict[str, Callable[[], tf.Tensor]] = {
      'AutoContrast': lambda: autocontrast(image),
      'Equalize': lambda: equalize(image),
      'Invert': lambda: invert(image),
      'Rotate': lambda: rotate(image, arg, fill),
      'Posterize': lambda: posterize(image, arg),
      'Solarize': lambda: solarize(image, arg),
      'SolarizeAdd': lambda: solarize_add(image, arg),
      'Color': lambda: color(image, arg),
      'Contrast': lambda: contrast(image, arg),
      'Brightness': lambda: brightness(image, arg),
      'Sharpness': lambda: sharpness(image, arg),
      'ShearX': lambda: shear_x(image, arg, fill),
      'ShearY': lambda: shear_y(image, arg, fill),
      'TranslateX': lambda: translate_x(image, arg, fill),
      'TranslateY': lambda: translate_y(image, arg, fill),
      'Cutout': lambda: cutout(image, arg, seed, fill),
  }
  if name not in ops:
    raise ValueError(f'Unknown augmentation op {name!r}; known: {sorted(ops)}.')
  return ops[name]()


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------

def apply_op_by_index(op_names: Sequence[str], op_index, image: tf.Tensor, level,
                      hparams: AugmentHParams, seed) -> tf.Tensor:
  """Apply op_names[op_index] (a scalar int tensor) at `level` (number or scalar tensor).

  One `tf.switch_case` over the distinct ops keeps the traced graph small (fast pipeline start).
  """
  branches = [lambda name=name: apply_op(name, image, level, hparams, seed) for name in op_names]
  return tf.ensure_shape(tf.switch_case(op_index, branches), image.shape)


def autoaugment(image: tf.Tensor, seed, policy=POLICY_V0,
                hparams: AugmentHParams = AUTOAUGMENT_HPARAMS) -> tf.Tensor:
  """Pick one sub-policy uniformly and apply its two ops in order, each with its probability."""
  op_names = sorted({name for sub_policy in policy for name, _, _ in sub_policy})
  op_indices = tf.constant([[op_names.index(name) for name, _, _ in sub] for sub in policy])
  probabilities = tf.constant([[prob for _, prob, _ in sub] for sub in policy], tf.float32)
  levels = tf.constant([[level for _, _, level in sub] for sub in policy], tf.float64)
  seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * 2)
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(policy), dtype=tf.int32)
  for position in range(2):
    apply_seed, op_seed = seeds[1 + 2 * position], seeds[2 + 2 * position]
    should_apply = tf.random.stateless_uniform([], apply_seed) < probabilities[choice, position]
    current = image
    image = tf.cond(
        should_apply,
        lambda current=current, position=position, op_seed=op_seed: apply_op_by_index(
            op_names, op_indices[choice, position], current, levels[choice, position],
            hparams, op_seed),
        lambda current=current: current)
  return image


def randaugment(image: tf.Tensor, seed, num_layers: int = 2, magnitude: float = 10,
                hparams: AugmentHParams = RANDAUGMENT_HPARAMS) -> tf.Tensor:
  """Apply `num_layers` ops, each drawn uniformly from RANDAUGMENT_OPS, always at `magnitude`."""
  layer_seeds = tf.random.experimental.stateless_split(seed, max(num_layers, 1) * 2)
  for layer in range(num_layers):
    choice_seed, op_seed = layer_seeds[2 * layer], layer_seeds[2 * layer + 1]
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(RANDAUGMENT_OPS), dtype=tf.int32)
    image = apply_op_by_index(RANDAUGMENT_OPS, choice, image, magnitude, hparams, op_seed)
  return image


def augment_image(image: tf.Tensor, seed, augment_name: str | None,
                  randaug_num_layers: int = 2, randaug_magnitude: float = 10) -> tf.Tensor:
  """Dispatch on `augment_name` (None, 'autoaugment' or 'randaugment'); uint8 in, uint8 out."""
  if augment_name is None:
    return image
  if augment_name == 'autoaugment':
    return autoaugment(image, seed)
  if augment_name == 'randaugment':
    return randaugment(image, seed, randaug_num_layers, randaug_magnitude)
  raise ValueError(
      f"augment_name must be None, 'autoaugment' or 'randaugment', got {augment_name!r}.")
