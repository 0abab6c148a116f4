"""'glyph_shapes': procedural 64x64 images whose class needs both coarse shape and fine detail.

Made for the small-scale scaling study (experiments/README.md): the built-in digits are 8x8 pixels,
where a higher input resolution adds no information, so resolution scaling could not win there.
Here every image shows one large shape (disk, triangle, square, five-point star or ring; 14-26 px
radius, random position and rotation) whose surface is covered with tiny glyphs, either '+' or 'x',
3 or 5 px wide on a jittered grid, over a smooth random background with pixel noise. The class is
(shape, glyph): 5 x 2 = 10 classes.

- The shape is visible at any input size >= ~16 px: a small network at low resolution can get
  about half of the label (the shape) right.
- The glyph type lives in 1-px strokes. The trainer resizes by bicubic interpolation without
  anti-aliasing, so at 32 px (exactly half) it keeps every other pixel row and column: a 3-px '+'
  or 'x' becomes one dot, two dots or a 2x2 block depending on where it falls, and the glyph type is
  only statistically visible; 5-px glyphs survive partly. At 40-56 px the strokes are
  interpolated, and at 64 px they are exact. Accuracy on the glyph half of the label therefore rises
  with the input resolution, and the network still needs depth (receptive field over the shape)
  and width (features for shapes x glyphs) to use it.
- Colours are random per image (the body is darker than the background, the glyphs lighter than
  the body), so colour carries no label.

Deterministic from a seed (train seed 0, test seed 1), no downloads; 5,000 train / 1,000 test
images, prepared in about 20 seconds on one CPU core on first use.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NAME = 'glyph_shapes'
IMAGE_SIZE = 64
NUM_TRAIN = 5000
NUM_TEST = 1000
SHAPES = ('disk', 'triangle', 'square', 'star', 'ring')
GLYPHS = ('plus', 'cross')
CLASS_NAMES = tuple(f'{shape}_{glyph}' for shape in SHAPES for glyph in GLYPHS)


def glyph_stamp(glyph: str, size: int) -> np.ndarray:
  """Boolean [size, size] mask of a '+' (plus) or 'x' (cross) with 1-px strokes; size is odd."""
  middle = size // 2
  stamp = np.zeros((size, size), bool)
  if glyph == 'plus':
    stamp[middle, :] = True
    stamp[:, middle] = True
  elif glyph == 'cross':
    diagonal = np.arange(size)
    stamp[diagonal, diagonal] = True
    stamp[diagonal, size - 1 - diagonal] = True
  else:
    raise ValueError(f'Unknown glyph {glyph!r}; use one of {GLYPHS}.')
  return stamp


def shape_mask(shape: str, center: tuple[float, float], radius: float, angle: float,
               size: int = IMAGE_SIZE) -> np.ndarray:
  """Boolean [size, size] mask of `shape` centred at (y, x) with circumradius `radius` pixels."""
  ys, xs = np.mgrid[0:size, 0:size] + 0.5
  dy, dx = ys - center[0], xs - center[1]
  distance = np.hypot(dy, dx)
  if shape == 'disk':
    return distance <= radius
  if shape == 'ring':
    return (distance <= radius) & (distance >= 0.55 * radius)
  polygon_sides = {'triangle': 3, 'square': 4}
  if shape in polygon_sides:
    sides = polygon_sides[shape]
    # Inside a regular polygon: the projection onto every edge normal is below the apothem.
    normals = angle + (np.arange(sides) + 0.5) * 2 * np.pi / sides
    apothem = radius * np.cos(np.pi / sides)
    projections = dx[..., None] * np.cos(normals) + dy[..., None] * np.sin(normals)
    return np.all(projections <= apothem, axis=-1)
  if shape == 'star':
    # Five points: the boundary radius swings between 0.45 r and r with the polar angle.
    theta = np.arctan2(dy, dx) - angle
    swing = np.abs(((theta * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between
    return distance <= radius * (0.45 + 0.55 * swing)
  raise ValueError(f'Unknown shape {shape!r}; use one of {SHAPES}.')


def render(label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
  """One uint8 RGB [size, size, 3] image of class `label` (index into CLASS_NAMES)."""
  shape, glyph = SHAPES[label // len(GLYPHS)], GLYPHS[label % len(GLYPHS)]
  # Smooth background: a random colour plus a gentle 3x3 colour field, bilinearly upsampled.
  background_colour = rng.uniform(130, 225, 3)
  coarse = background_colour + rng.uniform(-35, 35, (3, 3, 3))
  grid = np.linspace(0, 2, size)
  low = np.minimum(grid.astype(int), 1)
  frac = grid - low
  rows = coarse[low] * (1 - frac)[:, None, None] + coarse[low + 1] * frac[:, None, None]
  image = rows[:, low] * (1 - frac)[None, :, None] + rows[:, low + 1] * frac[None, :, None]

  radius = rng.uniform(14, 26)
  center = tuple(rng.uniform(radius * 0.8, size - radius * 0.8, 2))
  mask = shape_mask(shape, center, radius, rng.uniform(0, 2 * np.pi), size)
  # The body is darker than the background and the glyphs lighter than the body (random hues), so
  # a tiny network can find the shape from the first layer's edges.
  body_colour = background_colour - rng.uniform(70, 110) + rng.uniform(-20, 20, 3)
  glyph_colour = body_colour + rng.uniform(90, 130)
  image[mask] = body_colour

  glyph_size = int(rng.choice([3, 5]))
  stamp = glyph_stamp(glyph, glyph_size)
  spacing = glyph_size + 2
  glyphs = np.zeros((size + 3 * spacing, size + 3 * spacing), bool)
  offset_y, offset_x = rng.integers(0, spacing, 2)
  for top in range(offset_y, size + spacing, spacing):
    for left in range(offset_x, size + spacing, spacing):
      jitter_y, jitter_x = rng.integers(-1, 2, 2)
      y, x = top + jitter_y + spacing, left + jitter_x + spacing
      glyphs[y:y + glyph_size, x:x + glyph_size] |= stamp
  glyphs = glyphs[spacing:spacing + size, spacing:spacing + size] & mask
  image[glyphs] = glyph_colour
  image += rng.normal(0, 8, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def generate(count: int, seed: int, size: int = IMAGE_SIZE):
  """Yields (index, image, label) for `count` images, classes in a shuffled balanced order."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(count) % len(CLASS_NAMES))
  for index, label in enumerate(labels):
    yield index, render(int(label), rng, size), int(label)


class GlyphShapes(tfds.core.GeneratorBasedBuilder):
  """Shapes covered with tiny '+' or 'x' glyphs: 10 classes, 64x64 RGB, generated offline."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='png'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the images are generated.
    return {'train': self._generate_examples(NUM_TRAIN, seed=0),
            'test': self._generate_examples(NUM_TEST, seed=1)}

  def _generate_examples(self, count: int, seed: int):
    for index, image, label in generate(count, seed):
      yield index, {'image': image, 'label': label}
