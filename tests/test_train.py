"""train.py: sharding equivalence, learning rate in the step, resume, kill -9, bad input, NaN stop/skip.

Compilation dominates on CPU, so the step tests share one mini network and one batch (module
fixtures), and the loop tests share one tiny digits config whose compiled programs come from a
persistent compilation cache after the first run.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for `configs`

from configs import default as default_config  # noqa: E402
from configs import quickstart  # noqa: E402
from xla_env import xla_flags  # noqa: E402
from effnet_jax import checkpoint, optim, sharding, train  # noqa: E402
from effnet_jax.models import efficientnet  # noqa: E402

IMAGE_SIZE = 16
NUM_CLASSES = 10
GLOBAL_BATCH = 32
# Tolerances for "same computation, different device count": only the reduction order differs.
RTOL, ATOL = 1e-5, 1e-6


# ----------------------------------------------------------------------------------------------
# Train step on a mini network


def mini_model():
  """Two B0 stages at width 0.25: compiles in seconds on CPU. No dropout / stochastic depth so
  that different device counts see identical computations."""
  return efficientnet.efficientnet(width=0.25, depth=0.5, resolution=IMAGE_SIZE, dropout_rate=0.0,
                                   survival_prob=None, block_strings=efficientnet.B0_BLOCKS[:2],
                                   num_classes=NUM_CLASSES)


def step_config():
  config = default_config.get_config()
  config.batch_size = GLOBAL_BATCH
  config.optimizer = 'sgd'     # update = -lr * grad: makes the learning rate directly observable
  config.momentum = 0.0
  config.warmup_epochs = 0.0
  config.base_learning_rate = 0.8  # lr0 = 0.1 at batch 32
  config.weight_decay = 1e-3
  return config


def host_copy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.fixture(scope='module')
def step_setup():
  config = step_config()
  model = mini_model()
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10.0, total_steps=100)
  tx = optim.create_optimizer(config, learning_rate_fn)
  init_fn = train.make_init_fn(model, tx, IMAGE_SIZE)
  mesh8 = sharding.create_mesh()
  assert mesh8.size == 8, 'tests/conftest.py should force 8 CPU devices'
  initial_state = host_copy(train.create_train_state(init_fn, 0, mesh8))
  rng = np.random.default_rng(0)
  batch = {'image': rng.uniform(0, 255, (GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32),
           'label': rng.integers(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32)}
  results = {}

  def run(name, mesh, bn_group_size, use_shard_map=None):
    """One train step from the initial state; cached per configuration."""
    if name not in results:
      step = train.make_train_step(config, model, tx, learning_rate_fn, NUM_CLASSES, mesh,
                                   bn_group_size, use_shard_map=use_shard_map)
      state = sharding.replicate(initial_state, mesh)
      new_state, metrics = step(state, sharding.make_global_batch(batch, mesh))
      results[name] = (host_copy(new_state), host_copy(metrics))
    return results[name]

  return dict(config=config, model=model, learning_rate_fn=learning_rate_fn,
              initial_state=initial_state, batch=batch, run=run, mesh8=mesh8,
              mesh1=sharding.create_mesh(jax.devices()[:1]))


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_global_bn_on_8_devices_equals_1_device(step_setup):
  """8 devices, global BN (plain jit) == 1 device on the same global batch (rtol 1e-5, atol 1e-6)."""
  state1, metrics1 = step_setup['run']('one_device', step_setup['mesh1'], 1)
  state8, metrics8 = step_setup['run']('global_jit', step_setup['mesh8'], 8)
  np.testing.assert_allclose(metrics8['loss'], metrics1['loss'], rtol=RTOL, atol=ATOL)
  assert_trees_close(state8.params, state1.params)
  assert_trees_close(state8.batch_stats, state1.batch_stats)
  assert_trees_close(state8.ema_params, state1.ema_params)
  assert int(state8.step) == 1


def shard_alone(setup, images, labels):
  """Loss, gradients and new BN statistics of the model on one shard on its own (1 device)."""
  config, model, initial = setup['config'], setup['model'], setup['initial_state']
  mean, std = train.data_lib.normalization_constants('efficientnet')

  @jax.jit
  def loss_and_grads(images, labels):
    def loss_fn(params):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': initial.batch_stats},
          train.data_lib.normalize_images(images, mean, std), train=True, mutable=['batch_stats'])
      loss = (optim.cross_entropy_loss(logits, labels, NUM_CLASSES, config.label_smoothing) +
              config.weight_decay * optim.l2_loss(params))
      return loss, new_vars['batch_stats']
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(initial.params)
    return loss, grads, batch_stats
  return loss_and_grads(images, labels)


def test_per_device_bn_each_shard_alone_then_averaged(step_setup):
  """per_device BN runs under shard_map: the step's loss, BN statistics and SGD update equal the
  average over shards of each shard computed alone (BN moving averages are linear in the batch
  statistics; gradients are averaged like the reference's CrossShardOptimizer). This also checks
  that the step applies lr(step) of the schedule and that the L2 term skips batch norm."""
  config, initial = step_setup['config'], step_setup['initial_state']
  state, metrics = step_setup['run']('per_device', step_setup['mesh8'], 1)
  batch = step_setup['batch']
  shards = [shard_alone(step_setup, images, labels) for images, labels in
            zip(np.split(batch['image'], 8), np.split(batch['label'], 8))]
  average = lambda trees: jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *trees)  # noqa
  np.testing.assert_allclose(metrics['loss'], np.mean([s[0] for s in shards]), rtol=RTOL,
                             atol=ATOL)
  assert_trees_close(state.batch_stats, average([s[2] for s in shards]))
  learning_rate = float(step_setup['learning_rate_fn'](0))
  assert learning_rate == pytest.approx(config.base_learning_rate * config.batch_size / 256)
  assert float(metrics['learning_rate']) == pytest.approx(learning_rate)
  expected_params = jax.tree.map(lambda p, g: p - learning_rate * g, initial.params,
                                 average([s[1] for s in shards]))
  assert_trees_close(state.params, expected_params, rtol=1e-4, atol=1e-6)
  # Per-device variances differ from whole-batch ones (means average to the same value).
  global_state, _ = step_setup['run']('global_jit', step_setup['mesh8'], 8)
  momentum = step_setup['model'].bn_momentum  # new = momentum * 1 + (1 - momentum) * batch_var
  assert not np.allclose(state.batch_stats['stem_bn']['var'] - momentum,
                         global_state.batch_stats['stem_bn']['var'] - momentum, rtol=1e-3, atol=0)
  # The L2 term is the loss minus the cross-entropy, and covers no batch-norm parameter.
  l2 = float(optim.l2_loss(initial.params))
  manual_l2 = sum(0.5 * np.sum(np.square(leaf)) for path, leaf in
                  jax.tree_util.tree_flatten_with_path(initial.params)[0]
                  if not any('bn' in str(key) for key in path))
  assert l2 == pytest.approx(manual_l2, rel=1e-5)
  np.testing.assert_allclose(metrics['loss'] - metrics['cross_entropy'], config.weight_decay * l2,
                             rtol=1e-4)


def test_scanned_blocks_with_remat_equal_plain_blocks_under_grouped_bn(step_setup):
  """B5-B7's configs: scan_blocks + remat with batch-norm statistics over groups of 2 devices
  (shard_map, as on a TPU pod) take the same step as the plain network."""
  config, mesh = step_setup['config'], step_setup['mesh8']
  plain = efficientnet.efficientnet(width=0.25, depth=1.0, resolution=IMAGE_SIZE, dropout_rate=0.0,
                                    survival_prob=None, num_classes=NUM_CLASSES,
                                    block_strings=[efficientnet.B0_BLOCKS[0], 'r3_k3_s22_e6_i16_o24_se0.25'])
  assert efficientnet.block_scan_groups(plain.blocks) == [(2, 3)]
  tx = optim.create_optimizer(config, step_setup['learning_rate_fn'])
  initial = host_copy(train.create_train_state(train.make_init_fn(plain, tx, IMAGE_SIZE), 0, mesh))
  results = []
  for model in (plain, plain.clone(scan_blocks=True, remat=True)):
    state = initial
    if model.scan_blocks:
      stack = lambda tree: efficientnet.scan_block_variables({'c': tree}, plain.blocks)['c']  # noqa: E731
      state = initial.replace(params=stack(initial.params), batch_stats=stack(initial.batch_stats),
                              ema_params=stack(initial.ema_params),
                              ema_batch_stats=stack(initial.ema_batch_stats),
                              opt_state=tx.init(stack(initial.params)))
    step = train.make_train_step(config, model, tx, step_setup['learning_rate_fn'], NUM_CLASSES, mesh, 2)
    new_state, metrics = step(sharding.replicate(host_copy(state), mesh),
                              sharding.make_global_batch(step_setup['batch'], mesh))
    results.append((host_copy(new_state), host_copy(metrics)))
  (plain_state, plain_metrics), (scan_state, scan_metrics) = results
  np.testing.assert_allclose(scan_metrics['loss'], plain_metrics['loss'], rtol=RTOL, atol=ATOL)
  unstack = lambda tree: efficientnet.unscan_block_variables({'c': tree}, plain.blocks)['c']  # noqa: E731
  assert_trees_close(unstack(scan_state.params), plain_state.params, rtol=1e-4, atol=1e-6)
  assert_trees_close(unstack(scan_state.batch_stats), plain_state.batch_stats)


def test_multi_step_call_equals_single_steps(step_setup):
  """steps_per_call=3: one compiled call over 3 stacked batches gives the state and the per-step
  metrics of 3 one-step calls (8 devices, global BN)."""
  config, mesh = step_setup['config'], step_setup['mesh8']
  tx = optim.create_optimizer(config, step_setup['learning_rate_fn'])
  make = lambda count: train.make_train_step(  # noqa: E731
      config, step_setup['model'], tx, step_setup['learning_rate_fn'], NUM_CLASSES, mesh, 8,
      steps_per_call=count)
  batch = step_setup['batch']
  batches = [dict(image=np.roll(batch['image'], 5 * i, axis=0), label=np.roll(batch['label'], 5 * i))
             for i in range(3)]
  state = sharding.replicate(step_setup['initial_state'], mesh)
  one_step, single_metrics = make(1), []
  for each in batches:
    state, metrics = one_step(state, sharding.make_global_batch(each, mesh))
    single_metrics.append(host_copy(metrics))
  stacked = jax.tree.map(lambda *arrays: np.stack(arrays), *batches)
  multi_state, multi_metrics = make(3)(sharding.replicate(step_setup['initial_state'], mesh),
                                       sharding.make_global_batch(stacked, mesh, stacked=True))
  multi_state, multi_metrics = host_copy(multi_state), host_copy(multi_metrics)
  assert int(multi_state.step) == 3 and multi_metrics['loss'].shape == (3,)
  assert_trees_close(multi_state, host_copy(state))
  for i, metrics in enumerate(single_metrics):
    for name, value in metrics.items():
      np.testing.assert_allclose(multi_metrics[name][i], value, rtol=RTOL, atol=ATOL, err_msg=name)
  with pytest.raises(ValueError, match='steps_per_call must be >= 1'):
    make(0)


def test_steps_in_next_call_never_crosses_a_step_the_loop_acts_on():
  config = default_config.get_config()
  config.steps_per_loop, config.log_every_steps = 3, 4
  config.eval_every_steps, config.checkpoint_every_steps = 0, 10
  calls, step = [], 0
  while step < 13:
    calls.append(train.steps_in_next_call(step, 13, config))
    step += calls[-1]
  # Steps 4, 8, 12 log, 10 saves, 13 ends the run: each ends a call.
  assert calls == [3, 1, 3, 1, 1, 1, 1, 1, 1]
  config.freeze_backbone_steps = 4  # fine-tuning's frozen steps run one at a time
  assert [train.steps_in_next_call(s, 13, config) for s in (0, 3, 4)] == [1, 1, 3]
  config.steps_per_loop = 1
  assert train.steps_in_next_call(4, 13, config) == 1


# ----------------------------------------------------------------------------------------------
# The loop on the digits dataset


@pytest.fixture(scope='module')
def compilation_cache():
  """The run-wide persistent compilation cache (tests/conftest.py): repeated train_and_evaluate
  calls and subprocesses with the same shapes reuse compiled programs (10-30 s each on CPU)."""
  return os.environ['JAX_COMPILATION_CACHE_DIR']


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def tiny_config(data_dir, **overrides):
  """The quickstart recipe shrunk: 16 px, batch 16, constant lr (so a run's length does not
  change its schedule), checkpoints every 2 steps, evaluation at the end only."""
  config = quickstart.get_config()
  config.data_dir = data_dir
  config.image_size = IMAGE_SIZE
  config.batch_size = 16
  config.eval_batch_size = 120
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  config.lr_schedule = 'constant'
  config.warmup_epochs = 0.0
  config.bn_group = 'global'
  config.block_strings = ','.join(efficientnet.B0_BLOCKS[:2])  # 2 stages, 2 blocks: fast to compile
  for name, value in overrides.items():
    config[name] = value
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as file:
    return [json.loads(line) for line in file]


def restore_params(workdir, step):
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, train.CHECKPOINT_SUBDIR, str(step), 'state'))
  return jax.tree.map(np.asarray, state['params'])


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory, digits_dir, compilation_cache):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  final = train.train_and_evaluate(tiny_config(digits_dir), workdir)
  return workdir, final


def test_run_writes_metrics_config_events_and_checkpoints(uninterrupted_run):
  workdir, final = uninterrupted_run
  assert final['step'] == 4
  for key in ('train_loss', 'eval_top1', 'eval_top5', 'eval_ema_top1', 'eval_ema_top5'):
    assert np.isfinite(final[key]), key
  assert final['eval_examples'] == 360  # every digits test example exactly once
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == [1, 2, 3, 4]
  for record in records:
    assert {'step', 'train_loss', 'learning_rate', 'images_per_sec'} <= set(record)
  assert {'eval_top1', 'eval_top5', 'eval_ema_top1', 'eval_ema_top5'} <= set(records[-1])
  assert json.load(open(os.path.join(workdir, 'config.json')))['model'] == 'efficientnet-b0'
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
  with checkpoint.Checkpointer(os.path.join(workdir, train.CHECKPOINT_SUBDIR)) as checkpointer:
    assert checkpointer.all_steps() == [2, 4]


def test_resume_equals_uninterrupted_run(tmp_path, digits_dir, uninterrupted_run):
  """2N steps in one run == N steps, a new train_and_evaluate call on the workdir, N more."""
  reference_dir, reference = uninterrupted_run
  workdir = str(tmp_path / 'resumed')
  train.train_and_evaluate(tiny_config(digits_dir, num_train_steps=2), workdir)
  resumed = train.train_and_evaluate(tiny_config(digits_dir, num_train_steps=4), workdir)
  assert resumed['step'] == 4
  # Same examples in the same order: the per-step losses of steps 3 and 4 agree.
  reference_losses = {r['step']: r['train_loss'] for r in read_metrics(reference_dir)}
  resumed_losses = {r['step']: r['train_loss'] for r in read_metrics(workdir)}
  for step in (1, 2, 3, 4):
    assert resumed_losses[step] == pytest.approx(reference_losses[step], rel=1e-5), step
  assert_trees_close(restore_params(workdir, 4), restore_params(reference_dir, 4))
  assert resumed['eval_top1'] == pytest.approx(reference['eval_top1'])


def test_steps_per_loop_run_equals_uninterrupted_run(tmp_path, digits_dir, uninterrupted_run):
  """steps_per_loop=2 (two steps per compiled call): same checkpoints, same state at the end, and
  each logged train loss is the mean of the one-step run's losses over the same steps."""
  reference_dir, reference = uninterrupted_run
  workdir = str(tmp_path / 'two_per_call')
  final = train.train_and_evaluate(tiny_config(digits_dir, steps_per_loop=2, log_every_steps=2),
                                   workdir)
  assert final['step'] == 4
  reference_losses = {r['step']: r['train_loss'] for r in read_metrics(reference_dir)}
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == [2, 4]
  for record in records:
    step = record['step']
    expected = (reference_losses[step - 1] + reference_losses[step]) / 2
    assert record['train_loss'] == pytest.approx(expected, rel=1e-5), step
  with checkpoint.Checkpointer(os.path.join(workdir, train.CHECKPOINT_SUBDIR)) as checkpointer:
    assert checkpointer.all_steps() == [2, 4]
  assert_trees_close(restore_params(workdir, 4), restore_params(reference_dir, 4))
  assert final['eval_top1'] == pytest.approx(reference['eval_top1'])


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, digits_dir, uninterrupted_run):
  workdir = str(tmp_path / 'diverged')
  train.train_and_evaluate(tiny_config(digits_dir, num_train_steps=2), workdir)
  with pytest.raises(train.NonFiniteLossError,
                     match=r'diverged at step \d+ \(the (loss|gradients|updated parameters)') as error:
    train.train_and_evaluate(
        tiny_config(digits_dir, num_train_steps=6, base_learning_rate=1e38), workdir)
  bad_step = int(str(error.value).split('step ')[1].split(' ')[0])
  assert bad_step in (3, 4, 5, 6)
  with checkpoint.Checkpointer(os.path.join(workdir, train.CHECKPOINT_SUBDIR)) as checkpointer:
    steps = checkpointer.all_steps()
  assert max(steps) < bad_step
  for leaf in jax.tree.leaves(restore_params(workdir, max(steps))):
    assert np.all(np.isfinite(leaf))


def finite_metrics(**overrides):
  metrics = dict(loss=1.0, grad_norm=2.0, grads_finite=1.0, state_finite=1.0, skipped=0.0)
  return {name: np.float32(value) for name, value in dict(metrics, **overrides).items()}


@pytest.mark.parametrize('overrides, quantity', [
    (dict(loss=np.inf, grads_finite=0.0), r'the loss \(inf\)'),
    (dict(loss=np.nan), r'the loss \(nan\)'),
    (dict(grads_finite=0.0, grad_norm=np.nan), r'the gradients \(global norm nan\)'),
    (dict(state_finite=0.0), 'the updated parameters or batch-norm statistics'),
])
def test_nan_stop_names_the_step_and_the_quantity(overrides, quantity):
  guard = train.NonFiniteGuard('stop', max_consecutive_skips=3)
  guard.check([(7, finite_metrics())])
  with pytest.raises(train.NonFiniteLossError, match=rf'diverged at step 8 \({quantity} is not finite'):
    guard.check([(8, finite_metrics(**overrides)), (9, finite_metrics())])
  train.NonFiniteGuard('ignore', 3).check([(8, finite_metrics(**overrides))])


def test_nan_skip_counts_skipped_steps_and_stops_after_too_many_in_a_row():
  guard = train.NonFiniteGuard('skip', max_consecutive_skips=3)
  skipped = finite_metrics(loss=np.nan, skipped=1.0)
  guard.check([(1, skipped), (2, skipped), (3, finite_metrics()), (4, skipped), (5, skipped)])
  assert (guard.skipped_steps, guard.consecutive_skips) == (4, 2)
  with pytest.raises(train.NonFiniteLossError, match=r'step 6 \(the loss \(nan\).*last 3 steps were '
                                                     r'all skipped.*max_consecutive_nan_skips=3'):
    guard.check([(6, skipped)])


def test_nan_skip_leaves_the_state_unchanged_and_applies_the_next_step(step_setup):
  """nan_policy='skip': a batch with a NaN image gives a NaN loss; that update is not applied (params,
  BN statistics, optimizer state and EMA unchanged), the step counter advances, and the next finite
  batch trains as usual."""
  config = step_config()
  config.nan_policy = 'skip'
  mesh = step_setup['mesh1']
  tx = optim.create_optimizer(config, step_setup['learning_rate_fn'])
  step = train.make_train_step(config, step_setup['model'], tx, step_setup['learning_rate_fn'],
                               NUM_CLASSES, mesh, 1)
  initial = step_setup['initial_state']
  poisoned = dict(step_setup['batch'], image=step_setup['batch']['image'].copy())
  poisoned['image'][3, 0, 0, 0] = np.nan
  state, metrics = step(sharding.replicate(initial, mesh), sharding.make_global_batch(poisoned, mesh))
  metrics = host_copy(metrics)
  assert np.isnan(metrics['loss']) and metrics['skipped'] == 1.0 and metrics['grads_finite'] == 0.0
  after_skip = host_copy(state)
  assert int(after_skip.step) == 1
  for name in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats'):
    for new, old in zip(jax.tree.leaves(getattr(after_skip, name)), jax.tree.leaves(getattr(initial, name))):
      np.testing.assert_array_equal(new, old, err_msg=name)
  state, metrics = step(state, sharding.make_global_batch(step_setup['batch'], mesh))
  assert float(metrics['skipped']) == 0.0 and np.isfinite(float(metrics['loss']))
  assert int(state.step) == 2
  assert not np.array_equal(np.asarray(state.params['stem_conv']['kernel']),
                            initial.params['stem_conv']['kernel'])


# ----------------------------------------------------------------------------------------------
# kill -9 during a checkpoint save

KILL_SCRIPT = '''
import sys
sys.path[:0] = [{repo!r}, {repo!r} + '/tests']
import jax
jax.config.update('jax_compilation_cache_dir', {cache!r})
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
from test_train import tiny_config
from effnet_jax import train
config = tiny_config({data_dir!r}, num_train_steps=10000, checkpoint_every_steps=1,
                     log_every_steps=1000)
train.train_and_evaluate(config, {workdir!r})
'''


def test_kill_9_during_checkpoint_save_leaves_a_resumable_workdir(tmp_path, digits_dir,
                                                                 uninterrupted_run,
                                                                 compilation_cache):
  workdir = tmp_path / 'killed'
  checkpoints = workdir / train.CHECKPOINT_SUBDIR
  script = KILL_SCRIPT.format(repo=str(REPO_ROOT), cache=compilation_cache, data_dir=digits_dir,
                              workdir=str(workdir))
  env = dict(os.environ, XLA_FLAGS=xla_flags(8),
             JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO_ROOT))
  process = subprocess.Popen([sys.executable, '-c', script], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    # Wait until a save is in flight (a temporary step directory exists) after >= 2 commits.
    while time.time() < deadline and process.poll() is None:
      names = os.listdir(checkpoints) if checkpoints.exists() else []
      committed = [n for n in names if n.isdigit()]
      if len(committed) >= 2 and any('tmp' in n for n in names):
        break
      time.sleep(0.01)
    assert process.poll() is None, 'the training subprocess exited early'
    assert time.time() < deadline, 'no checkpoint save observed'
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  committed = sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())
  final = train.train_and_evaluate(
      tiny_config(digits_dir, num_train_steps=max(committed) + 1), str(workdir))
  assert final['step'] == max(committed) + 1


# ----------------------------------------------------------------------------------------------
# Bad input fails before any compute


def test_batch_not_divisible_by_devices_fails_with_advice(tmp_path, digits_dir):
  with pytest.raises(ValueError, match=r'multiple of the number of devices \(8\).*16'):
    train.train_and_evaluate(tiny_config(digits_dir, batch_size=12), str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.jsonl')


def test_unknown_model_name_fails_listing_known_models(tmp_path, digits_dir):
  with pytest.raises(ValueError, match=r"Unknown model 'efficientnet-b9'.*efficientnet-b7"):
    train.train_and_evaluate(tiny_config(digits_dir, model='efficientnet-b9'), str(tmp_path))


def test_bad_bn_group_fails_with_valid_sizes(tmp_path, digits_dir):
  with pytest.raises(ValueError, match=r'bn_group=3 must divide.*config.bn_group'):
    train.train_and_evaluate(tiny_config(digits_dir, bn_group='3'), str(tmp_path))


def test_workdir_of_another_model_is_refused(tmp_path, digits_dir):
  mesh = sharding.create_mesh()
  with checkpoint.Checkpointer(str(tmp_path / train.CHECKPOINT_SUBDIR)) as checkpointer:
    checkpointer.save(5, sharding.replicate({'w': np.zeros(3, np.float32)}, mesh),
                      {'model_name': 'efficientnet-b3', 'image_size': 300}, data_position=5)
  with pytest.raises(ValueError, match=r"checkpoint \(step 5\) of model 'efficientnet-b3'.*new --workdir"):
    train.train_and_evaluate(tiny_config(digits_dir), str(tmp_path))


def test_main_rejects_unknown_config_field(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'effnet_jax.main', '--config', 'configs/quickstart.py',
       f'--workdir={tmp_path}', '--config.batchsize=64'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode != 0
  assert 'batchsize' in result.stderr
  assert not os.listdir(tmp_path)
