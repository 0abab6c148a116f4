"""The scaling study: one dimension against compound scaling at matched multiply-adds, and the α/β/γ grid.

    python -m experiments.scaling_study --config configs/scaling_small.py --workdir /tmp/study \
        --out experiments/results --jobs 2                         # this machine: 15 min
    python -m experiments.scaling_study --config configs/b0.py --workdir gs://BUCKET/study \
        --out results --print-commands                             # ImageNet: one command per run

Parts (`--parts`, default all three; each writes its CSV and PNG to `--out` when its runs are done):
  scaling   paper Figure 3 / Table 7: the base network, and the base scaled by depth only, width
            only, resolution only and compound scaling (depth α^φ, width β^φ, resolution γ^φ), each
            to every multiply-add budget in `--budgets` (multiples of the base's, default 2,4).
            The multiplier that meets a budget is searched with the model's own multiply-add
            count (effnet_jax.models.cost, shape-only). -> scaling.csv, scaling.png (top-1 against
            multiply-adds, one line per method).
  figure4   paper Figure 4: width scaling at fixed (depth, resolution) pairs: (1, 1), (d, 1),
            (1, r) and (d, r), where d and r are the depth and resolution multipliers that met
            the first budget, at widths 1 and the width multiplier that met the first budget; the
            (1, 1) series also has every width-only point. -> figure4.csv, figure4.png.
  grid      paper §3.3 step 1: at φ = 1, (α, β, γ) for α in `--alphas`, β in `--betas` and γ
            ≥ 1 the multiple of 0.05 closest to α·β²·γ² = 2, kept when α·β²·γ² is within
            `--tolerance` of 2; (1.2, 1.1, 1.15) is always included. -> grid.csv, grid.png; the
            best triple and the paper's are printed.

Every run is a point of experiments.sweep (same config overrides, `--config.FIELD=VALUE`): equal
multipliers share one workdir, so the parts reuse each other's runs, and a restarted study skips
finished runs and resumes the unfinished one from its checkpoints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Callable, Sequence

from experiments import plots, sweep

PARTS = ('scaling', 'grid', 'figure4')  # in the order they run
METHODS = ('depth', 'width', 'resolution', 'compound')
PAPER_TRIPLE = plots.PAPER_TRIPLE
COST_CACHE = 'costs.json'
# Search ranges of the multipliers (φ for compound); budgets beyond them are reported as unmet.
SEARCH_RANGES = {'depth': (1.0, 16.0), 'width': (1.0, 8.0), 'resolution': (1.0, 8.0),
                 'compound': (0.0, 10.0)}


class CostModel:
  """Multiply-adds of a point's network, counted once per point and cached in the workdir."""

  def __init__(self, config_spec: str, overrides: dict, workdir: str | None = None):
    self._config_spec, self._overrides = config_spec, overrides
    self._path = os.path.join(workdir, COST_CACHE) if workdir else None
    self._cache: dict[str, dict] = {}
    if self._path and os.path.exists(self._path):
      with open(self._path) as file:
        self._cache = json.load(file)

  def cost(self, point: sweep.Point) -> dict:
    if point.name not in self._cache:
      config = sweep.point_config(self._config_spec, point, self._overrides)
      self._cache[point.name] = sweep.model_cost_of(config)
      if self._path:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        with open(self._path, 'w') as file:
          json.dump(self._cache, file, indent=1, sort_keys=True)
    return self._cache[point.name]

  def macs(self, point: sweep.Point) -> int:
    return self.cost(point)['macs']


def method_point(method: str, value: float, alpha: float, beta: float, gamma: float) -> sweep.Point:
  """The point that scales the base by `value` along `method` (φ for compound)."""
  value = round(value, 3)
  if method == 'compound':
    return sweep.compound_point(value, alpha, beta, gamma)
  if method not in METHODS:
    raise ValueError(f'Unknown scaling method {method!r}; use one of {METHODS}.')
  return sweep.Point(**{method: value})


def match_budget(macs_of: Callable[[float], int], target: float, low: float, high: float,
                 iterations: int = 9) -> tuple[float, int]:
  """The multiplier in [low, high] whose multiply-adds are closest to `target` (log scale).

  Bisection on a cost that grows with the multiplier (in steps, as channels and repeats round);
  every multiplier tried is a candidate, so the result is the closest one seen.
  """
  best = None
  for _ in range(iterations):
    middle = math.sqrt(low * high) if low > 0 else (low + high) / 2
    macs = macs_of(middle)
    error = abs(math.log(macs / target))
    if best is None or error < best[0]:
      best = (error, middle, macs)
    if macs < target:
      low = middle
    else:
      high = middle
  return best[1], best[2]


def plan_scaling(costs: CostModel, budgets: Sequence[float], alpha: float, beta: float,
                 gamma: float) -> list[dict]:
  """The base point and one point per (method, budget): rows with 'method', 'budget', 'point'."""
  base = sweep.Point()
  base_macs = costs.macs(base)
  plan = [dict(method=method, budget=1.0, point=base) for method in METHODS]
  for method in METHODS:
    low, high = SEARCH_RANGES[method]
    for budget in budgets:
      value, _ = match_budget(
          lambda v: costs.macs(method_point(method, v, alpha, beta, gamma)),
          budget * base_macs, low, high)
      if method == 'resolution':  # name the point by the input size it rounds to
        size = costs.cost(method_point(method, value, alpha, beta, gamma))['image_size']
        value = size / costs.cost(base)['image_size']
      plan.append(dict(method=method, budget=budget,
                       point=method_point(method, value, alpha, beta, gamma)))
  return plan


def plan_figure4(scaling_plan: Sequence[dict]) -> list[dict]:
  """Width series at fixed (depth, resolution) pairs, from the scaling plan's first budget."""
  first_budget = min(row['budget'] for row in scaling_plan if row['budget'] > 1)
  chosen = {row['method']: row['point'] for row in scaling_plan if row['budget'] == first_budget}
  depth, resolution, width = (chosen['depth'].depth, chosen['resolution'].resolution,
                              chosen['width'].width)
  plan = []
  for pair_depth, pair_resolution in ((1.0, 1.0), (depth, 1.0), (1.0, resolution),
                                       (depth, resolution)):
    widths = [1.0, width]
    if (pair_depth, pair_resolution) == (1.0, 1.0):
      widths = [1.0] + [row['point'].width for row in scaling_plan
                        if row['method'] == 'width' and row['budget'] > 1]
    for series_width in widths:
      plan.append(dict(series=f'd={pair_depth:g}, r={pair_resolution:g}', depth=pair_depth,
                       resolution=pair_resolution,
                       point=sweep.Point(pair_depth, series_width, pair_resolution)))
  return plan


def grid_triples(alphas: Sequence[float], betas: Sequence[float], tolerance: float,
                 step: float = 0.05) -> list[tuple[float, float, float]]:
  """(α, β, γ) with γ ≥ 1 on a `step` grid closest to α·β²·γ² = 2, within `tolerance` of 2."""
  from effnet_jax import scaling
  triples = []
  for alpha in alphas:
    for beta in betas:
      exact_gamma = math.sqrt(scaling.FLOPS_GROWTH_TARGET / (alpha * beta**2))
      gamma = round(max(1.0, round(exact_gamma / step) * step), 4)
      growth = scaling.flops_growth_per_phi(alpha, beta, gamma)
      if abs(growth - scaling.FLOPS_GROWTH_TARGET) <= tolerance:
        triples.append((alpha, beta, gamma))
  if PAPER_TRIPLE not in triples:
    triples.append(PAPER_TRIPLE)
  return triples


def plan_grid(triples: Sequence[tuple[float, float, float]]) -> list[dict]:
  from effnet_jax import scaling
  return [dict(alpha=a, beta=b, gamma=g, growth=round(scaling.flops_growth_per_phi(a, b, g), 4),
               point=sweep.compound_point(1.0, a, b, g)) for a, b, g in triples]


# ----------------------------------------------------------------------------------------------
# Tables and plots


def attach_results(plan: Sequence[dict], results: dict[str, dict]) -> list[dict]:
  """Plan rows joined with their points' sweep rows (only finished points)."""
  rows = []
  for entry in plan:
    result = results.get(entry['point'].name)
    if result is not None:
      row = {**{k: v for k, v in entry.items() if k != 'point'}, **result}
      if entry['point'].phi is not None:  # runs started by --print-commands/--jobs lack it
        row['phi'] = entry['point'].phi
      rows.append(row)
  return rows


def _method_label(row: dict) -> str:
  if row['budget'] == 1.0:
    return ''
  value = {'depth': row['depth_multiplier'], 'width': row['width_multiplier'],
           'resolution': row['resolution_multiplier'], 'compound': row['phi']}[row['method']]
  symbol = {'depth': 'd', 'width': 'w', 'resolution': 'r', 'compound': 'φ'}[row['method']]
  return f'{symbol}={value:g}'


def grid_summary(rows: Sequence[dict]) -> str:
  """The best triple, and where the paper's (1.2, 1.1, 1.15) ranks."""
  ranked = sorted(rows, key=lambda r: -r['best_top1'])
  best = ranked[0]
  lines = [f'best (α, β, γ) = ({best["alpha"]:g}, {best["beta"]:g}, {best["gamma"]:g}): '
           f'top-1 {100 * best["best_top1"]:.1f}% at {best["macs"] / 1e6:.2f} M multiply-adds']
  for rank, row in enumerate(ranked, 1):
    if (row['alpha'], row['beta'], row['gamma']) == PAPER_TRIPLE:
      lines.append(f'paper (1.2, 1.1, 1.15): top-1 {100 * row["best_top1"]:.1f}% '
                   f'(rank {rank} of {len(ranked)}, {100 * (row["best_top1"] - best["best_top1"]):+.1f} '
                   f'points from the best)')
  return '\n'.join(lines)


def run_in_subprocesses(sweep_arguments: Sequence[str], workdir: str,
                        points: Sequence[sweep.Point], jobs: int) -> None:
  """Trains `points`, `jobs` at a time, each in its own `python -m experiments.sweep --point` process.

  XLA:CPU compiles on one thread: two processes on two cores overlap one run's compilation with
  another's training. Each process logs to WORKDIR/<point>.log. A failed point is reported and
  left unfinished (the tables leave it out; rerun the study to retry it).
  """
  import concurrent.futures
  import subprocess

  os.makedirs(workdir, exist_ok=True)

  def run(point):
    if sweep.read_result(workdir, point) is not None:
      print(f'[study] {point.name}: finished meanwhile', flush=True)
      return
    command = [sys.executable, '-m', 'experiments.sweep',
               *sweep.point_argv(sweep_arguments, workdir, point), f'--point={point.name}']
    print(f'[study] start {point.name}', flush=True)
    with open(os.path.join(workdir, f'{point.name}.log'), 'a') as log:
      code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f'[study] {point.name}: ' + ('done' if code == 0 else
                                       f'FAILED (exit {code}; see {point.name}.log)'), flush=True)

  # Points whose workdir exists may be running in another process (a study restarted while its
  # workers still train): they go last and are skipped if they have finished by then.
  points = sorted(points, key=lambda p: os.path.isdir(sweep.point_dir(workdir, p)))
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    list(pool.map(run, points))


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments.scaling_study',
                                   description=__doc__.split('\n\n')[0],
                                   epilog='Any --config.FIELD=VALUE overrides the config.')
  parser.add_argument('--config', required=True, help='base config, e.g. configs/scaling_small.py')
  parser.add_argument('--workdir', required=True, help='one workdir per run lives here')
  parser.add_argument('--out', help='where the CSV and PNG files go (default WORKDIR)')
  parser.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated of {PARTS}')
  parser.add_argument('--budgets', default='2,4', help='multiply-add budgets, multiples of the base')
  parser.add_argument('--alpha', type=float, default=PAPER_TRIPLE[0])
  parser.add_argument('--beta', type=float, default=PAPER_TRIPLE[1])
  parser.add_argument('--gamma', type=float, default=PAPER_TRIPLE[2])
  parser.add_argument('--alphas', default='1.0,1.4', help='grid search: α values (1.2 with β=1.1 '
                      'is the paper\'s triple, always included)')
  parser.add_argument('--betas', default='1.1', help='grid search: β values')
  parser.add_argument('--tolerance', type=float, default=0.1,
                      help='grid search: keep |α·β²·γ² - 2| <= tolerance')
  parser.add_argument('--print-commands', action='store_true',
                      help='print one sweep command per unfinished run instead of training')
  parser.add_argument('--jobs', type=int, default=1,
                      help='trainings at a time, each in its own process (default 1: in this one)')
  parser.add_argument('--collect-only', action='store_true',
                      help='tables and plots from finished runs only')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args, rest = build_parser().parse_known_args(argv)
  from absl import logging
  logging.set_verbosity(logging.INFO)  # the trainer's progress lines
  overrides = sweep.parse_overrides(rest)
  parts = [p for p in args.parts.split(',') if p]
  unknown = set(parts) - set(PARTS)
  if unknown:
    raise ValueError(f'Unknown --parts {sorted(unknown)}; use some of {PARTS}.')
  out = args.out or args.workdir
  budgets = sweep.parse_floats(args.budgets)
  costs = CostModel(args.config, overrides, args.workdir)
  triple = (args.alpha, args.beta, args.gamma)

  plans = {}
  if 'scaling' in parts or 'figure4' in parts:
    plans['scaling'] = plan_scaling(costs, budgets, *triple)
  if 'figure4' in parts:
    plans['figure4'] = plan_figure4(plans['scaling'])
  if 'grid' in parts:
    plans['grid'] = plan_grid(grid_triples(sweep.parse_floats(args.alphas),
                                           sweep.parse_floats(args.betas), args.tolerance))

  sweep_arguments = ['--config', args.config, *rest]
  unfinished = []
  for part in parts:
    for entry in plans[part]:
      point = entry['point']
      if (point.name not in {p.name for p in unfinished}
          and sweep.read_result(args.workdir, point) is None):
        unfinished.append(point)
  if args.print_commands:
    for point in unfinished:
      print(sweep.point_command(sweep.point_argv(sweep_arguments, args.workdir, point), point))
    return 0
  if args.jobs > 1 and not args.collect_only:
    run_in_subprocesses(sweep_arguments, args.workdir, unfinished, args.jobs)

  results: dict[str, dict] = {}
  for part in parts:
    points = [entry['point'] for entry in plans[part]]
    for row in sweep.run_points(args.config, points, overrides, args.workdir,
                                collect_only=args.collect_only):
      results[row['point']] = row
    rows = attach_results(plans[part], results)
    if not rows:
      continue
    csv_path, png_path = os.path.join(out, f'{part}.csv'), os.path.join(out, f'{part}.png')
    if part == 'scaling':
      sweep.write_csv(rows, csv_path, ('method', 'budget') + sweep.CSV_COLUMNS)
      plots.plot_lines(rows, 'method', png_path, 'Scaling one dimension vs compound scaling '
                 f'({os.path.basename(args.config)})', _method_label)
    elif part == 'figure4':
      sweep.write_csv(rows, csv_path, ('series',) + sweep.CSV_COLUMNS)
      plots.plot_lines(rows, 'series', png_path, 'Width scaling at fixed depth d and resolution r',
                 lambda r: f'w={r["width_multiplier"]:g}')
    else:
      sweep.write_csv(rows, csv_path, ('alpha', 'beta', 'gamma', 'growth') + sweep.CSV_COLUMNS)
      plots.plot_grid(rows, png_path, f'φ = 1 grid search, α·β²·γ² within {args.tolerance:g} of 2')
      summary = grid_summary(rows)
      with open(os.path.join(out, 'grid_summary.txt'), 'w') as file:
        file.write(summary + '\n')
      print(summary)
    print(f'[study] {part}: {len(rows)} rows -> {csv_path}, {png_path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
