"""Look at and time the training input: writes a PNG grid of augmented images, prints images/sec.

  python -m effnet_jax.data.inspect --dataset digits --data-dir /tmp/tfds --image-size 32 \
      --train-crop resize --no-random-flip --out digits.png
  python -m effnet_jax.data.inspect --dataset imagenet2012 --data-dir gs://BUCKET/tfds \
      --image-size 224 --augment autoaugment --out grid.png
  python -m effnet_jax.data.inspect --config configs/quickstart.py --out grid.png

Benchmark on 512 offline ImageNet-like JPEGs (prepared into --data-dir on first use):
  python -m effnet_jax.data.inspect --dataset synthetic_photos --data-dir /tmp/tfds \
      --image-size 224 --batch-size 64 --benchmark-batches 40

With --config, the trainer config's fields (dataset, data_dir, image_size, augment_name,
randaug_num_layers, randaug_magnitude, mixup_alpha, train_crop, random_flip, eval_crop_padding,
seed, batch_size) are the defaults and explicit flags override them. `--config path.py:ARG`
calls get_config(ARG).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

# Config field -> argparse destination.
CONFIG_FIELDS = {
    'dataset': 'dataset', 'data_dir': 'data_dir', 'image_size': 'image_size',
    'augment_name': 'augment', 'randaug_num_layers': 'randaug_num_layers',
    'randaug_magnitude': 'randaug_magnitude', 'mixup_alpha': 'mixup_alpha',
    'train_crop': 'train_crop', 'random_flip': 'random_flip',
    'eval_crop_padding': 'crop_padding', 'seed': 'seed', 'batch_size': 'batch_size',
}
DEFAULTS = {
    'dataset': None, 'data_dir': None, 'image_size': 224, 'augment': None,
    'randaug_num_layers': 2, 'randaug_magnitude': 10, 'mixup_alpha': 0.0,
    'train_crop': 'inception', 'random_flip': True, 'crop_padding': 32, 'seed': 0,
    'batch_size': 32,
}


def load_config_file(spec: str):
  """get_config() (or get_config(arg) for 'path.py:arg') of a config file."""
  path, _, argument = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('inspected_config', path)
  if module_spec is None:
    raise SystemExit(f'Cannot load config file {path!r}.')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', help='trainer config file (fields give the defaults)')
  parser.add_argument('--dataset', help='TFDS name, e.g. imagenet2012, digits')
  parser.add_argument('--data-dir', dest='data_dir', help='TFDS data_dir (local or gs://)')
  parser.add_argument('--split', default='train')
  parser.add_argument('--image-size', dest='image_size', type=int)
  parser.add_argument('--augment', choices=['autoaugment', 'randaugment', 'none'])
  parser.add_argument('--randaug-num-layers', dest='randaug_num_layers', type=int)
  parser.add_argument('--randaug-magnitude', dest='randaug_magnitude', type=float)
  parser.add_argument('--mixup-alpha', dest='mixup_alpha', type=float)
  parser.add_argument('--train-crop', dest='train_crop', choices=['inception', 'resize'])
  parser.add_argument('--random-flip', dest='random_flip', action='store_true', default=None)
  parser.add_argument('--no-random-flip', dest='random_flip', action='store_false')
  parser.add_argument('--crop-padding', dest='crop_padding',
                      help="eval/fallback crop padding: int or 'size/7'")
  parser.add_argument('--seed', type=int)
  parser.add_argument('--batch-size', dest='batch_size', type=int)
  parser.add_argument('--num-images', dest='num_images', type=int, default=32,
                      help='images in the grid')
  parser.add_argument('--out', default=None, help='PNG path for the grid (omit: no grid)')
  parser.add_argument('--benchmark-batches', dest='benchmark_batches', type=int, default=20,
                      help='batches to time after 2 warm-up batches (0: no timing)')
  args = parser.parse_args(argv)

  config = load_config_file(args.config) if args.config else None
  for field, destination in CONFIG_FIELDS.items():
    if getattr(args, destination) is None:
      value = config.get(field, None) if config is not None else None
      setattr(args, destination, DEFAULTS[destination] if value is None else value)
  if args.augment == 'none':
    args.augment = None
  if isinstance(args.crop_padding, str) and args.crop_padding.isdigit():
    args.crop_padding = int(args.crop_padding)
  if not args.dataset:
    parser.error('--dataset (or a --config with a dataset field) is required.')
  return args


def label_text(batch: dict, index: int) -> str:
  if 'mixup_label' in batch:
    return (f"{batch['label'][index]}/{batch['mixup_label'][index]} "
            f"{batch['mixup_weight'][index]:.2f}")
  return str(batch['label'][index])


def write_grid(batch: dict, num_images: int, path: str) -> None:
  """Tile the first num_images images (clipped to [0, 255]) with their labels under each."""
  from PIL import Image, ImageDraw
  images = np.clip(batch['image'][:num_images], 0, 255).astype(np.uint8)
  count, size = len(images), images.shape[1]
  tile = max(size, 64)  # Upscale tiny images (digits) so labels stay readable.
  columns = math.ceil(math.sqrt(count))
  rows = math.ceil(count / columns)
  text_height = 14
  grid = Image.new('RGB', (columns * tile, rows * (tile + text_height)), 'white')
  draw = ImageDraw.Draw(grid)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    x, y = column * tile, row * (tile + text_height)
    grid.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (x, y))
    draw.text((x + 2, y + tile + 1), label_text(batch, index), fill='black')
  grid.save(path)


def main(argv=None) -> None:
  args = parse_args(argv)
  from effnet_jax import data  # Imported after parsing so --help is fast.
  iterator = data.create_train_iterator(
      name=args.dataset, data_dir=args.data_dir, split=args.split,
      per_host_batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
      augment_name=args.augment, randaug_num_layers=args.randaug_num_layers,
      randaug_magnitude=args.randaug_magnitude, mixup_alpha=args.mixup_alpha,
      train_crop=args.train_crop, random_flip=args.random_flip, crop_padding=args.crop_padding,
      process_index=0, process_count=1)
  first = next(iterator)
  if args.out:
    write_grid(first, args.num_images, args.out)
    print(f'Wrote {min(args.num_images, len(first["label"]))} images to {args.out}')
  if args.benchmark_batches > 0:
    for _ in range(2):
      next(iterator)
    start = time.perf_counter()
    for _ in range(args.benchmark_batches):
      next(iterator)
    elapsed = time.perf_counter() - start
    images = args.benchmark_batches * args.batch_size
    print(f'{images / elapsed:.1f} images/sec ({images} images of {args.image_size}px, '
          f'batch {args.batch_size}, augment={args.augment}, {os.cpu_count()} CPUs)')


if __name__ == '__main__':
  main(sys.argv[1:])
