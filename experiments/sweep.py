"""Sweep runner: one training per point, resumable, collected into a CSV.

    python -m experiments.sweep --config configs/phi.py --phi 0,0.5,1,1.5,2 --workdir DIR
    python -m experiments.sweep --config configs/scaling_small.py --depth 1,2 --width 1,1.5 --workdir DIR
    python -m experiments.sweep ... --print-commands      # one command per point, for a cluster / TPU queue
    python -m experiments.sweep ... --collect-only        # CSV of the finished points, trains nothing

A point is a config: the `--config` file (plus `--config.FIELD=VALUE` overrides, as for
effnet_jax.main) scaled by multipliers. `--phi` points use the config file's own argument when it
takes one (configs/phi.py:φ, the exact EfficientNet-φ recipe); otherwise φ means compound scaling of
the config's network, depth α^φ, width β^φ, input size γ^φ (`--alpha/--beta/--gamma`, default
1.2/1.1/1.15). `--depth/--width/--resolution` lists give the cartesian product of single multipliers
of the config's depth, width and image_size (`scale_config`).

Each point trains in its own workdir DIR/<point name> through the normal trainer
(`train.train_and_evaluate`), so an interrupted point resumes from its own checkpoints; a finished
point has DIR/<point name>/result.json and is skipped. The CSV (default DIR/sweep.csv) has one row per
finished point: parameters and multiply-adds (effnet_jax.models.cost, counted from the model), the
training throughput in images/sec (median of the logged values after the first, which includes
compilation) and the best top-1 over the run's evaluations (EMA weights, as the reference reports;
the raw weights' best is a separate column).

`--plot` (default DIR/sweep.png) draws best top-1 against multiply-adds, one marker per point.
`--print-commands` prints, for every unfinished point, the command that trains just that point
(`--point NAME`); run them anywhere that shares DIR (e.g. gs://), then `--collect-only`.
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import dataclasses
import importlib.util
import json
import math
import os
import shlex
import statistics
import sys
import time
from typing import Any, Iterable, Sequence

from effnet_jax import scaling

RESULT_FILE = 'result.json'
CSV_COLUMNS = ('point', 'model', 'depth_multiplier', 'width_multiplier', 'resolution_multiplier',
               'phi', 'image_size', 'params', 'macs', 'images_per_sec', 'best_top1',
               'best_raw_top1', 'final_top1', 'steps', 'train_seconds')


@dataclasses.dataclass(frozen=True)
class Point:
  """One training of a sweep.

  depth, width, resolution multiply the base config's depth, width and image_size; phi_argument
  (when not None) is passed to the config file instead (configs/phi.py:φ) and the multipliers stay 1.
  """
  depth: float = 1.0
  width: float = 1.0
  resolution: float = 1.0
  phi_argument: float | None = None
  phi: float | None = None  # the compound coefficient this point stands for, when it is one

  @property
  def name(self) -> str:
    """The point's workdir name; equal multipliers give the same name, so studies share runs."""
    if self.phi_argument is not None:
      return f'phi{self.phi_argument:g}'
    return f'd{self.depth:g}_w{self.width:g}_r{self.resolution:g}'


# ----------------------------------------------------------------------------------------------
# Configs


def load_config(config_spec: str, argument: str | None = None):
  """`path.py` or `path.py:arg` -> the file's get_config(arg) (a locked ConfigDict).

  `argument` (if given) replaces the one in `config_spec`. The file's directory's parent goes on
  sys.path so that configs can import each other (`from configs import default`).
  """
  path, _, spec_argument = config_spec.partition(':')
  argument = spec_argument if argument is None else argument
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Config file {path!r} does not exist (--config).')
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)
  module_spec = importlib.util.spec_from_file_location(
      f'_sweep_config_{os.path.splitext(os.path.basename(path))[0]}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(argument) if argument else module.get_config()
  config.lock()
  return config


def config_takes_argument(config_spec: str) -> bool:
  """Whether the config file's get_config takes an argument (like configs/phi.py)."""
  path = config_spec.partition(':')[0]
  with open(path) as file:
    tree = ast.parse(file.read(), path)
  for node in tree.body:
    if isinstance(node, ast.FunctionDef) and node.name == 'get_config':
      return bool(node.args.args)
  raise ValueError(f'{path} defines no get_config().')


def parse_overrides(arguments: Sequence[str]) -> dict[str, str]:
  """['--config.batch_size=32', ...] -> {'batch_size': '32'}; anything else is an error."""
  overrides = {}
  for argument in arguments:
    if not argument.startswith('--config.') or '=' not in argument:
      raise ValueError(f'Unexpected argument {argument!r}: config overrides look like '
                       f'--config.FIELD=VALUE.')
    field, value = argument[len('--config.'):].split('=', 1)
    overrides[field] = value
  return overrides


def _parse_value(text: str, field_type: type):
  if text in ('None', 'none'):
    return None
  if field_type is bool:
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'Expected true or false, got {text!r}.')
    return text.lower() in ('true', '1')
  if field_type in (int, float, str):
    return field_type(text)
  return json.loads(text)


def apply_overrides(config, overrides: dict[str, Any]):
  """Sets config fields from strings (parsed by the field's type) or values; unknown fields fail."""
  config = copy.deepcopy(config)
  for field, value in overrides.items():
    if field not in config:
      raise ValueError(f'Unknown config field {field!r} in --config.{field}=...; the config has: '
                       f'{", ".join(sorted(config.keys()))}.')
    if isinstance(value, str) and config.get_type(field) is not str:
      value = _parse_value(value, config.get_type(field))
    config[field] = value
  return config


def base_image_size(config) -> int:
  """The config's input side: image_size, or its model's resolution when that is None."""
  if config.image_size:
    return int(config.image_size)
  from effnet_jax import models
  return models.resolve_model_spec(config.model, phi=config.phi, width=config.width,
                                   depth=config.depth).resolution


def scaled_image_size(base_size: int, resolution: float) -> int:
  """base_size x resolution rounded to a multiple of 8 px, as scaling.compound_scaling rounds.

  Convolution outputs have ceil(size / stride) positions, so sizes that are not multiples of the
  network's total stride waste multiply-adds on padding; configs/scaling_small.py has stride 8.
  """
  return scaling.round_resolution(base_size * resolution)


def scale_config(config, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0):
  """A copy of `config` with its network `depth`x deeper, `width`x wider and input `resolution`x.

  Multiplies the config's depth and width fields (None counts as 1, i.e. the named model's own)
  and its image_size (or the model's resolution when None); a multiplier of 1 changes nothing.
  """
  for label, value in (('depth', depth), ('width', width), ('resolution', resolution)):
    if not value > 0:
      raise ValueError(f'The {label} multiplier must be positive, got {value}.')
  size = (config.image_size if resolution == 1 else
          scaled_image_size(base_image_size(config), resolution))
  return apply_overrides(config, {
      'depth': None if depth == 1 and config.depth is None else (config.depth or 1.0) * depth,
      'width': None if width == 1 and config.width is None else (config.width or 1.0) * width,
      'image_size': size})


def point_config(config_spec: str, point: Point, overrides: dict[str, Any]):
  """The full config that trains `point`: file (with φ argument), overrides, then multipliers."""
  argument = None if point.phi_argument is None else f'{point.phi_argument:g}'
  config = apply_overrides(load_config(config_spec, argument), overrides)
  return scale_config(config, point.depth, point.width, point.resolution)


def compound_point(phi: float, alpha: float, beta: float, gamma: float) -> Point:
  """The point of compound coefficient φ: depth α^φ, width β^φ, resolution γ^φ."""
  compound = scaling.compound_scaling(phi, alpha, beta, gamma)
  return Point(depth=round(compound.depth, 4), width=round(compound.width, 4),
               resolution=round(compound.resolution_multiplier, 4), phi=phi)


# ----------------------------------------------------------------------------------------------
# Running and collecting


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


def summarize_metrics(records: list[dict]) -> dict[str, Any]:
  """Best/final top-1 and training images/sec from a run's metrics.jsonl records.

  A resumed run appends to the same file; every evaluation counts. Throughput: the median of the
  logged images_per_sec after the first log of each (re)start, whose interval includes compilation.
  """
  evals = [r for r in records if 'eval_top1' in r]
  speeds, previous_step = [], None
  for record in records:
    if 'images_per_sec' in record:
      if previous_step is not None and record['step'] > previous_step:
        speeds.append(record['images_per_sec'])
      previous_step = record['step']
  if not speeds:
    speeds = [r['images_per_sec'] for r in records if 'images_per_sec' in r]
  return dict(
      best_top1=max((r['eval_ema_top1'] for r in evals), default=float('nan')),
      best_raw_top1=max((r['eval_top1'] for r in evals), default=float('nan')),
      final_top1=evals[-1]['eval_ema_top1'] if evals else float('nan'),
      images_per_sec=statistics.median(speeds) if speeds else float('nan'),
      steps=max((r['step'] for r in records), default=0))


def model_cost_of(config) -> dict[str, Any]:
  """Parameters and multiply-adds of the network the trainer builds from `config` (shape-only)."""
  from effnet_jax import data, models, train
  from effnet_jax.models import cost
  try:
    num_classes = data.dataset_info(config.dataset, config.data_dir, config.train_split,
                                    config.eval_split).num_classes
  except data.DatasetNotPreparedError:
    num_classes = 1000  # Planning a study before the data is there (ImageNet): costs barely care.
  model = train.create_model(config, num_classes)
  measured = cost.model_cost(model, base_image_size(config))
  spec = models.resolve_model_spec(config.model, phi=config.phi, width=config.width,
                                   depth=config.depth)
  return dict(model=spec.name, params=measured.params, macs=measured.macs,
              image_size=measured.resolution)


def point_dir(workdir: str, point: Point) -> str:
  return os.path.join(workdir, point.name)


def read_result(workdir: str, point: Point) -> dict | None:
  """The finished point's row, or None when it has not finished."""
  path = os.path.join(point_dir(workdir, point), RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as file:
    return json.load(file)


def run_point(config_spec: str, point: Point, overrides: dict[str, Any], workdir: str) -> dict:
  """Trains one point (resuming its checkpoints) and writes its result.json; returns the row."""
  from effnet_jax import train
  config = point_config(config_spec, point, overrides)
  directory = point_dir(workdir, point)
  start = time.time()
  final = train.train_and_evaluate(config, directory)
  if final.get('preempted'):
    raise InterruptedError(f'Point {point.name} was preempted at step {final["step"]}; run the '
                           'sweep again to resume it.')
  row = dict(point=point.name, depth_multiplier=point.depth, width_multiplier=point.width,
             resolution_multiplier=point.resolution,
             phi=point.phi if point.phi is not None else point.phi_argument,
             train_seconds=round(time.time() - start, 1))
  row.update(model_cost_of(config))
  row.update(summarize_metrics(read_metrics(directory)))
  temporary = os.path.join(directory, RESULT_FILE + '.tmp')
  with open(temporary, 'w') as file:
    json.dump(row, file, indent=2, sort_keys=True)
  os.replace(temporary, os.path.join(directory, RESULT_FILE))  # atomic: a result is whole or absent
  return row


def run_points(config_spec: str, points: Iterable[Point], overrides: dict[str, Any],
               workdir: str, *, collect_only: bool = False, log=print) -> list[dict]:
  """Trains every unfinished point in order (unless collect_only); returns the finished rows."""
  rows, seen = [], set()
  for point in points:
    if point.name in seen:
      continue
    seen.add(point.name)
    row = read_result(workdir, point)
    if row is not None:
      log(f'[sweep] {point.name}: finished earlier (top-1 {row["best_top1"]:.4f}); skipped.')
    elif collect_only:
      log(f'[sweep] {point.name}: not finished; left out.')
      continue
    else:
      log(f'[sweep] {point.name}: training in {point_dir(workdir, point)}')
      row = run_point(config_spec, point, overrides, workdir)
      log(f'[sweep] {point.name}: top-1 {row["best_top1"]:.4f}, {row["macs"] / 1e6:.2f} M '
          f'multiply-adds, {row["train_seconds"]:.0f} s.')
    rows.append(row)
  return rows


def write_csv(rows: Sequence[dict], path: str, columns: Sequence[str] = CSV_COLUMNS) -> None:
  """Rows as CSV with `columns` first, then any other keys the rows have (sorted)."""
  extra = sorted({key for row in rows for key in row} - set(columns))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', newline='') as file:
    writer = csv.DictWriter(file, fieldnames=list(columns) + extra, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({key: _format(value) for key, value in row.items()})


def _format(value):
  if isinstance(value, float):
    return '' if math.isnan(value) else f'{value:.6g}'
  return '' if value is None else value


def point_argv(sweep_arguments: Sequence[str], workdir: str, point: Point) -> list[str]:
  """experiments.sweep arguments (`--config ...` and overrides) plus those that describe exactly
  `point` by its multipliers, for `point_command` or a subprocess."""
  return [*sweep_arguments, '--workdir', workdir, '--depth', f'{point.depth:g}',
          '--width', f'{point.width:g}', '--resolution', f'{point.resolution:g}']


def point_command(argv: Sequence[str], point: Point) -> str:
  """The command that trains only `point` with the same sweep arguments."""
  kept = [a for a in argv if not a.startswith(('--print-commands', '--point', '--collect-only'))]
  return shlex.join(['python', '-m', 'experiments.sweep', *kept,
                     f'--point={point.name}'])


# ----------------------------------------------------------------------------------------------
# Command line


def parse_floats(text: str | None) -> list[float]:
  if not text:
    return []
  try:
    return [float(value) for value in text.split(',') if value.strip()]
  except ValueError:
    raise ValueError(f'Expected comma-separated numbers, got {text!r}.') from None


def sweep_points(config_spec: str, phis: Sequence[float], depths: Sequence[float],
                 widths: Sequence[float], resolutions: Sequence[float], alpha: float, beta: float,
                 gamma: float) -> list[Point]:
  points = []
  if phis:
    takes_argument = config_takes_argument(config_spec)
    for phi in phis:
      points.append(Point(phi_argument=phi, phi=phi) if takes_argument
                    else compound_point(phi, alpha, beta, gamma))
  if depths or widths or resolutions:
    for depth in depths or [1.0]:
      for width in widths or [1.0]:
        for resolution in resolutions or [1.0]:
          points.append(Point(depth, width, resolution))
  if not points:
    raise ValueError('No points: give --phi and/or --depth/--width/--resolution lists.')
  return points


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m experiments.sweep', description=__doc__.split('\n\n')[0],
      epilog='Any --config.FIELD=VALUE overrides the config, as for effnet_jax.main.')
  parser.add_argument('--config', required=True, help='config file, e.g. configs/phi.py')
  parser.add_argument('--workdir', required=True, help='sweep directory: one workdir per point')
  parser.add_argument('--phi', help='comma-separated compound coefficients, e.g. 0,0.5,1')
  parser.add_argument('--depth', help='comma-separated depth multipliers')
  parser.add_argument('--width', help='comma-separated width multipliers')
  parser.add_argument('--resolution', help='comma-separated input-size multipliers')
  parser.add_argument('--alpha', type=float, default=scaling.DEFAULT_ALPHA)
  parser.add_argument('--beta', type=float, default=scaling.DEFAULT_BETA)
  parser.add_argument('--gamma', type=float, default=scaling.DEFAULT_GAMMA)
  parser.add_argument('--csv', help='output CSV (default WORKDIR/sweep.csv)')
  parser.add_argument('--plot', help='output PNG of top-1 against multiply-adds (default '
                      'WORKDIR/sweep.png; "none" for no plot)')
  parser.add_argument('--point', help='train only the point of this name')
  parser.add_argument('--print-commands', action='store_true',
                      help='print one command per unfinished point instead of training')
  parser.add_argument('--collect-only', action='store_true',
                      help='write the CSV of finished points; train nothing')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args, rest = build_parser().parse_known_args(argv)
  from absl import logging
  logging.set_verbosity(logging.INFO)  # the trainer's progress lines
  overrides = parse_overrides(rest)
  points = sweep_points(args.config, parse_floats(args.phi), parse_floats(args.depth),
                        parse_floats(args.width), parse_floats(args.resolution), args.alpha,
                        args.beta, args.gamma)
  if args.point:
    points = [p for p in points if p.name == args.point]
    if not points:
      raise ValueError(f'No point named {args.point!r} in this sweep.')
  if args.print_commands:
    for point in points:
      if read_result(args.workdir, point) is None:
        print(point_command(argv, point))
    return 0
  rows = run_points(args.config, points, overrides, args.workdir, collect_only=args.collect_only)
  if not args.point:
    csv_path = args.csv or os.path.join(args.workdir, 'sweep.csv')
    write_csv(rows, csv_path)
    print(f'[sweep] {len(rows)} finished points -> {csv_path}')
    plot_path = args.plot or os.path.join(args.workdir, 'sweep.png')
    if rows and plot_path != 'none':
      from experiments import plots
      for row in rows:
        row.setdefault('sweep', os.path.basename(args.config.partition(':')[0]))
      plots.plot_lines(rows, 'sweep', plot_path, f'Sweep of {args.config}',
                       lambda row: row['point'])
      print(f'[sweep] plot -> {plot_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
