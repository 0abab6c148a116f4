"""experiments/: a tiny 2-point sweep end to end (CSV, plot, interrupted and restarted), the study's plans."""
import csv
import json
import math
import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from experiments import plots, scaling_study, sweep  # noqa: E402

SMALL_CONFIG = str(REPO_ROOT / 'configs' / 'scaling_small.py')
# B0's first stage at 16 px on the digits, two steps: the sweep machinery, not the accuracy.
TINY_OVERRIDES = [
    '--config.dataset=digits', '--config.block_strings=r1_k3_s11_e1_i32_o16_se0.25',
    '--config.image_size=16', '--config.depth=1', '--config.num_train_steps=2',
    '--config.batch_size=16', '--config.eval_batch_size=120', '--config.log_every_steps=1',
    '--config.checkpoint_every_steps=2', '--config.shuffle_buffer_size=64',
]


def test_two_point_sweep_end_to_end_resumes_after_interruption(tmp_path, monkeypatch, capsys):
  from effnet_jax import train
  workdir = tmp_path / 'sweep'
  argv = ['--config', SMALL_CONFIG, '--workdir', str(workdir), '--depth', '1,2',
          f'--config.data_dir={tmp_path / "tfds"}', *TINY_OVERRIDES]
  trained = []
  real_train = train.train_and_evaluate

  def interrupted_after_first_point(config, point_workdir):
    if trained:  # The machine goes away as the second point starts.
      raise KeyboardInterrupt
    trained.append(pathlib.Path(point_workdir).name)
    return real_train(config, point_workdir)

  monkeypatch.setattr(train, 'train_and_evaluate', interrupted_after_first_point)
  with pytest.raises(KeyboardInterrupt):
    sweep.main(argv)
  assert trained == ['d1_w1_r1']
  assert (workdir / 'd1_w1_r1' / sweep.RESULT_FILE).exists()
  assert not (workdir / 'd2_w1_r1' / sweep.RESULT_FILE).exists()

  # The cluster view: only the unfinished point is left to run.
  capsys.readouterr()
  sweep.main(argv + ['--print-commands'])
  commands = capsys.readouterr().out.strip().splitlines()
  assert len(commands) == 1 and '--point=d2_w1_r1' in commands[0]
  assert commands[0].startswith('python -m experiments.sweep')

  def counting(config, point_workdir):
    trained.append(pathlib.Path(point_workdir).name)
    return real_train(config, point_workdir)

  monkeypatch.setattr(train, 'train_and_evaluate', counting)
  sweep.main(argv)  # The restart trains only the second point.
  assert trained == ['d1_w1_r1', 'd2_w1_r1']
  assert 'd1_w1_r1: finished earlier' in capsys.readouterr().out

  with open(workdir / 'sweep.csv') as file:
    rows = list(csv.DictReader(file))
  assert [row['point'] for row in rows] == ['d1_w1_r1', 'd2_w1_r1']
  for row in rows:
    assert int(row['params']) > 0 and int(row['macs']) > 0 and int(row['steps']) == 2
    assert float(row['images_per_sec']) > 0 and 0 <= float(row['best_top1']) <= 1
    assert row['image_size'] == '16'
  assert int(rows[1]['macs']) > int(rows[0]['macs'])  # twice the depth costs more
  assert (workdir / 'sweep.png').stat().st_size > 1000
  sweep.main(argv)  # Everything finished: nothing trains again.
  assert len(trained) == 2


def test_phi_points_use_the_config_argument_when_the_file_takes_one():
  assert sweep.config_takes_argument(str(REPO_ROOT / 'configs' / 'phi.py'))
  assert not sweep.config_takes_argument(SMALL_CONFIG)
  points = sweep.sweep_points(str(REPO_ROOT / 'configs' / 'phi.py'), [0, 1.5], [], [], [],
                              1.2, 1.1, 1.15)
  assert [p.name for p in points] == ['phi0', 'phi1.5']
  config = sweep.point_config(str(REPO_ROOT / 'configs' / 'phi.py'), points[1], {})
  assert config.phi == 1.5 and config.image_size == 280  # 224 * 1.15^1.5 = 276.2 -> 280
  # A config without an argument: φ scales its own network (depth, width, input size).
  compound = sweep.sweep_points(SMALL_CONFIG, [1], [], [], [], 1.2, 1.1, 1.15)[0]
  config = sweep.point_config(SMALL_CONFIG, compound, {'batch_size': '32'})
  assert (config.depth, config.width) == (pytest.approx(0.3), pytest.approx(0.275))
  assert config.image_size == 40 and config.batch_size == 32  # 32 * 1.15 = 36.8 -> 40
  with pytest.raises(ValueError, match='Unknown config field'):
    sweep.point_config(SMALL_CONFIG, compound, {'batchsize': '32'})


def test_match_budget_finds_the_closest_multiplier():
  # Stepwise cost like rounded repeats: ceil(4 * x) / 4 ... squared like width.
  value, cost = scaling_study.match_budget(lambda x: math.ceil(4 * x) ** 2, 64.0, 1.0, 8.0)
  assert cost == 64 and 1.75 < value <= 2.0


def test_grid_triples_meet_the_flops_constraint():
  triples = scaling_study.grid_triples([1.0, 1.2, 1.4], [1.0, 1.1, 1.2], tolerance=0.1)
  assert (1.2, 1.1, 1.15) in triples and (1.0, 1.0, 1.4) in triples
  for alpha, beta, gamma in triples:
    assert abs(alpha * beta**2 * gamma**2 - 2) <= 0.1 and gamma >= 1


def test_figure4_plan_and_plots(tmp_path):
  def point_row(method, budget, **multipliers):
    return dict(method=method, budget=budget, point=sweep.Point(**multipliers))
  plan = [point_row(m, 1.0) for m in scaling_study.METHODS] + [
      point_row('depth', 2, depth=3.0), point_row('width', 2, width=1.5),
      point_row('resolution', 2, resolution=1.5), point_row('width', 4, width=2.0),
      point_row('compound', 2, depth=1.4, width=1.2, resolution=1.3)]
  figure4 = scaling_study.plan_figure4(plan)
  names = [entry['point'].name for entry in figure4]
  assert names[:3] == ['d1_w1_r1', 'd1_w1.5_r1', 'd1_w2_r1']
  assert 'd3_w1.5_r1' in names and 'd1_w1.5_r1.5' in names
  assert names[-2:] == ['d3_w1_r1.5', 'd3_w1.5_r1.5'] and len(names) == 9  # the (d, r) pair

  rng = np.random.default_rng(0)
  rows = [dict(method=m, macs=float(k + 1) * 1e6, best_top1=float(rng.uniform()), budget=1.0)
          for m in scaling_study.METHODS for k in range(3)]
  plots.plot_lines(rows, 'method', str(tmp_path / 'lines.png'), 'test')
  grid_rows = [dict(alpha=a, beta=b, gamma=g, best_top1=float(rng.uniform()), macs=1e6)
               for a, b, g in scaling_study.grid_triples([1.0, 1.2], [1.0, 1.1], 0.1)]
  plots.plot_grid(grid_rows, str(tmp_path / 'grid.png'), 'test')
  assert (tmp_path / 'lines.png').stat().st_size > 1000
  assert (tmp_path / 'grid.png').stat().st_size > 1000
  assert 'paper (1.2, 1.1, 1.15)' in scaling_study.grid_summary(grid_rows)


def test_glyph_shapes_are_deterministic_and_need_resolution():
  from effnet_jax.data import glyph_shapes
  first = [image for _, image, _ in glyph_shapes.generate(4, seed=5)]
  again = [image for _, image, _ in glyph_shapes.generate(4, seed=5)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert first[0].shape == (64, 64, 3) and first[0].dtype == np.uint8
  labels = [label for _, _, label in glyph_shapes.generate(20, seed=0)]
  assert sorted(set(labels)) == list(range(10))
  # A 3-px '+' and 'x' differ at full resolution; keeping every other pixel (what a 2x bicubic
  # downscale without anti-aliasing samples) leaves the same single dot when the glyph sits at an
  # odd position.
  plus, cross = glyph_shapes.glyph_stamp('plus', 3), glyph_shapes.glyph_stamp('cross', 3)
  assert not np.array_equal(plus, cross)
  np.testing.assert_array_equal(plus[1::2, 1::2], cross[1::2, 1::2])


def test_study_prints_commands_and_collects_finished_runs(tmp_path, capsys):
  """The grid part without training: planned commands, then tables from (fake) finished runs."""
  workdir = tmp_path / 'study'
  argv = ['--config', SMALL_CONFIG, '--workdir', str(workdir), '--parts', 'grid',
          '--alphas', '1.0,1.2', '--betas', '1.1', '--config.num_train_steps=2']
  scaling_study.main(argv + ['--print-commands'])
  commands = capsys.readouterr().out.strip().splitlines()
  assert len(commands) == 2 and all('--config.num_train_steps=2' in c for c in commands)
  assert '--point=d1.2_w1.1_r1.15' in commands[1]
  for index, name in enumerate(['d1_w1.1_r1.3', 'd1.2_w1.1_r1.15']):
    (workdir / name).mkdir(parents=True)
    (workdir / name / sweep.RESULT_FILE).write_text(json.dumps(dict(
        point=name, macs=1e6 + index, params=10, best_top1=0.5 + 0.1 * index, phi=None)))
  scaling_study.main(argv + ['--collect-only', '--out', str(tmp_path / 'out')])
  with open(tmp_path / 'out' / 'grid.csv') as file:
    rows = list(csv.DictReader(file))
  assert [(row['alpha'], row['gamma'], row['phi']) for row in rows] == [('1', '1.3', '1'),
                                                                         ('1.2', '1.15', '1')]
  assert (tmp_path / 'out' / 'grid.png').exists()
  assert 'rank 1 of 2' in (tmp_path / 'out' / 'grid_summary.txt').read_text()


def test_unit_multipliers_leave_the_config_alone():
  config = sweep.load_config(str(REPO_ROOT / 'configs' / 'b2.py'))
  same = sweep.scale_config(config)
  assert (same.image_size, same.depth, same.width) == (260, None, None)
  wider = sweep.scale_config(config, width=2.0, resolution=1.15)
  assert (wider.width, wider.image_size) == (2.0, 296)  # 260 * 1.15 = 299 -> 296


def test_table3_trains_its_rows_through_the_sweep(tmp_path, capsys):
  from experiments import table3
  workdir = tmp_path / 'table3'
  overrides = [f'--config.data_dir={tmp_path / "tfds"}', '--config.dataset=digits',
               '--config.image_size=16', '--config.num_train_steps=2', '--config.batch_size=16',
               '--config.eval_batch_size=120', '--config.log_every_steps=1',
               '--config.checkpoint_every_steps=2', '--config.shuffle_buffer_size=64']
  argv = ['--train', '--workdir', str(workdir), *overrides]
  table3.main(argv + ['--rows', 'mobilenet-v1/r2'])  # one row: each one compiles its own network
  output = capsys.readouterr().out
  assert 'paper top-1' in output and '[table3] 1 trained rows' in output

  with open(workdir / 'table3.csv') as file:
    row, = csv.DictReader(file)
  # The row's model, not the config's default (mobilenet-v2), at the config's 1/4 width and the
  # row's resolution multiplier (2) on the config's 16 px: the costs of that very network.
  assert row['id'] == 'mobilenet-v1/r2' and row['name'] == 'mobilenet-v1'
  assert row['small_model'] == 'mobilenet-v1-w0.25' and row['small_image_size'] == '32'
  from effnet_jax.models import create_model
  from effnet_jax.models.cost import model_cost
  cost = model_cost(create_model('mobilenet-v1', num_classes=10, width=0.25), 32)
  assert (int(row['small_params']), int(row['small_macs'])) == (cost.params, cost.macs)
  assert int(row['small_steps']) == 2 and 0 <= float(row['small_best_top1']) <= 1
  assert (workdir / 'mobilenet-v1' / 'd1_w1_r2' / 'result.json').exists()

  # Finished rows are skipped; the others are printed as sweep commands for a queue.
  table3.main(argv + ['--rows', 'mobilenet-v1', '--print-commands'])
  commands = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith('python -m experiments.sweep')]
  assert len(commands) == 3  # baseline, w2 and compound; not the finished r2
  assert not any('--point=d1_w1_r2' in c for c in commands)
  assert all('--config.model=mobilenet-v1' in c and '--config.image_size=16' in c for c in commands)
  assert any('--width 2' in c and '--point=d1_w2_r1' in c for c in commands)
  with pytest.raises(ValueError, match='Unknown --rows'):
    table3.select_rows('mobilenet-v4')
