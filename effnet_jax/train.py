"""Train and evaluate an EfficientNet: `train_and_evaluate(config, workdir)`.

Reads top to bottom: config validation, mesh, input, model, optimizer and state, shardings, train
step, eval step, checkpoint, metrics, and the loop. One code path from one CPU to a TPU pod: the
state is replicated (P()) and donated, the batch is split over the 'data' mesh axis, everything
runs under `jax.jit`. Only grouped batch-norm statistics (reference-spec.md §2.9) need per-device
code: then the forward/backward pass runs under `jax.shard_map`.

Workdir layout:
  config.json             the resolved config of the (latest) run
  metrics.jsonl           one JSON object per logged step (step, train_loss, learning_rate,
                          images_per_sec, ... and eval_top1/top5, eval_ema_top1/top5 when evaluated)
  events.out.tfevents.*   TensorBoard scalars (train/ and eval/)
  checkpoints/<step>/     Orbax checkpoints (latest K plus the best by EMA top-1)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import PartitionSpec as P

from effnet_jax import checkpoint as checkpoint_lib
from effnet_jax import data as data_lib
from effnet_jax import models
from effnet_jax import optim
from effnet_jax import pretrained
from effnet_jax import sharding
from effnet_jax.models import efficientnet

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
NAN_POLICIES = ('stop', 'skip', 'ignore')
CHECKPOINT_SUBDIR = 'checkpoints'


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss, gradients or parameters; the message names step and quantity."""


# ----------------------------------------------------------------------------------------------
# Config validation: everything that can be checked before touching a device or the data.


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a config resolves to, computed before any compute."""
  model_spec: models.ModelSpec
  image_size: int
  compute_dtype: Any
  bn_group_size: int
  per_device_batch_size: int
  per_host_batch_size: int
  per_host_eval_batch_size: int


def validate_config(config: ml_collections.ConfigDict, mesh) -> RunPlan:
  """Checks a config against the mesh; raises ValueError saying which field to change."""
  if config.init_from:
    pretrained.read_metadata(config.init_from)  # Fails now, naming the directory, if it is not one.
  if config.freeze_backbone_steps < 0:
    raise ValueError(f'config.freeze_backbone_steps={config.freeze_backbone_steps} must be >= 0.')
  try:
    spec = models.resolve_model_spec(config.model, phi=config.phi, width=config.width,
                                     depth=config.depth)
  except ValueError as error:
    raise ValueError(f'{error} Set --config.model (and --config.phi) accordingly.') from error
  if config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f'Unknown config.dtype={config.dtype!r}; use one of {list(COMPUTE_DTYPES)}.')
  if config.nan_policy not in NAN_POLICIES:
    raise ValueError(f'Unknown config.nan_policy={config.nan_policy!r}; use one of {NAN_POLICIES}.')
  check_field_values(config)
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('Set config.num_train_steps > 0 or config.num_epochs > 0.')
  if config.log_every_steps <= 0:
    raise ValueError(f'config.log_every_steps must be positive, got {config.log_every_steps}.')
  image_size = config.image_size or spec.resolution
  if image_size <= 0:
    raise ValueError(f'config.image_size must be positive or None, got {image_size}.')
  try:
    group_size = sharding.bn_group_size(config.bn_group, mesh.size)
  except ValueError as error:
    raise ValueError(f'{error} (config.bn_group)') from error
  per_device = sharding.check_batch_size(config.batch_size, mesh)
  per_host = sharding.per_host_batch_size(config.batch_size)
  try:
    sharding.check_batch_size(config.eval_batch_size, mesh)
  except ValueError as error:
    raise ValueError(str(error).replace('config.batch_size', 'config.eval_batch_size')) from error
  per_host_eval = sharding.per_host_batch_size(config.eval_batch_size)
  return RunPlan(spec, int(image_size), COMPUTE_DTYPES[config.dtype], group_size, per_device,
                 per_host, per_host_eval)


def _in_range(low, high, low_open=False, high_open=True, none_ok=False):
  def check(value):
    if value is None:
      return none_ok
    return ((low < value if low_open else low <= value) and
            (value < high if high_open else value <= high))
  return check


# field -> (rule, what the value must be). Fields whose mistakes would otherwise surface only later,
# inside the optimizer, the input pipeline or the model (after the dataset is read and the program
# compiled), or never (a negative weight decay trains, badly).
FIELD_RULES = {
    'dropout_rate': (_in_range(0, 1, none_ok=True), 'in [0, 1), or None for the variant default'),
    'survival_prob': (_in_range(0, 1, low_open=True, high_open=False, none_ok=True),
                      'in (0, 1], or None to disable stochastic depth'),
    'bn_momentum': (_in_range(0, 1), 'in [0, 1)'),
    'label_smoothing': (_in_range(0, 1), 'in [0, 1)'),
    'base_learning_rate': (_in_range(0, math.inf), 'a finite number >= 0'),
    'warmup_epochs': (_in_range(0, math.inf), 'a finite number >= 0'),
    'weight_decay': (_in_range(0, math.inf), 'a finite number >= 0'),
    'moving_average_decay': (_in_range(0, 1, high_open=False), 'in [0, 1]'),
    'num_epochs': (_in_range(-math.inf, math.inf), 'a finite number'),
    'mixup_alpha': (_in_range(0, math.inf), '>= 0 (0 disables mixup)'),
    'shuffle_buffer_size': (_in_range(1, math.inf), '>= 1'),
    'randaug_num_layers': (_in_range(0, math.inf), '>= 0'),
    'checkpoint_max_to_keep': (_in_range(1, math.inf, none_ok=True), '>= 1, or None to keep all'),
    'max_consecutive_nan_skips': (_in_range(1, math.inf), '>= 1'),
    'steps_per_loop': (_in_range(1, math.inf), '>= 1'),
    'augment_name': (lambda v: v in data_lib.pipeline.AUGMENT_NAMES,
                     f'one of {data_lib.pipeline.AUGMENT_NAMES}'),
    'train_crop': (lambda v: v in data_lib.preprocessing.TRAIN_CROPS,
                   f'one of {data_lib.preprocessing.TRAIN_CROPS}'),
    'lr_schedule': (lambda v: v in optim.LR_SCHEDULES, f'one of {optim.LR_SCHEDULES}'),
    'optimizer': (lambda v: v in optim.OPTIMIZERS, f'one of {optim.OPTIMIZERS}'),
    'depthwise_implementation': (lambda v: v in models.depthwise.IMPLEMENTATIONS,
                                 f'one of {models.depthwise.IMPLEMENTATIONS}'),
    'pointwise_implementation': (lambda v: v in models.pointwise.IMPLEMENTATIONS,
                                 f'one of {models.pointwise.IMPLEMENTATIONS}'),
}


def check_field_values(config) -> None:
  """Raises ValueError naming the first field of FIELD_RULES whose value is out of range."""
  for name, (rule, requirement) in FIELD_RULES.items():
    if name not in config:
      continue
    value = config[name]
    try:
      valid = bool(rule(value))
    except TypeError:  # e.g. a string where a number belongs (Python-built configs)
      valid = False
    if not valid:
      raise ValueError(f'config.{name}={value!r} is invalid: it must be {requirement}. Set '
                       f'--config.{name} accordingly.')


def total_train_steps(config, num_train_examples: int) -> int:
  """num_train_steps if > 0, else int(num_epochs * examples / global batch) (at least 1).

  Rounded down like the reference: 350 epochs of ImageNet at 2048 -> 218,949 steps (§2.1).
  """
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(config.num_epochs * num_train_examples / config.batch_size))


# ----------------------------------------------------------------------------------------------
# Model


def create_model(config, num_classes: int, dtype=jnp.float32, **overrides) -> nn.Module:
  """The config's network; `overrides` are EfficientNet attributes (e.g. bn_axis_name)."""
  return models.create_model(
      config.model, num_classes, dtype, phi=config.phi, width=config.width, depth=config.depth,
      dropout_rate=config.dropout_rate, survival_prob=config.survival_prob,
      depthwise_implementation=config.depthwise_implementation,
      pointwise_implementation=config.pointwise_implementation, remat=config.remat,
      scan_blocks=config.scan_blocks,
      bn_momentum=config.bn_momentum,
      block_strings=config.block_strings.split(',') if config.block_strings else None, **overrides)


# ----------------------------------------------------------------------------------------------
# Train state


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint must hold to continue a run bit-for-bit (plus the data position)."""
  step: jax.Array             # int32 scalar: optimizer steps taken
  params: Any
  batch_stats: Any            # BN moving mean / variance
  opt_state: Any
  ema_params: Any             # exponential moving averages (§2.5), used for the reported eval
  ema_batch_stats: Any
  rng: jax.Array              # uint32[2] base key; each step folds in its step number


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, image_size: int):
  """seed -> TrainState; meant to run under jit with replicated out_shardings."""
  def init(seed):
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    dummy_images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = model.init({'params': init_rng}, dummy_images, train=False)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), ema_params=params, ema_batch_stats=batch_stats,
                      rng=train_rng)
  return init


def create_train_state(init_fn, seed: int, mesh) -> TrainState:
  """Initialises the state directly replicated on every device of the mesh (no host copy)."""
  return jax.jit(init_fn, out_shardings=sharding.replicated_sharding(mesh))(seed)


def start_from_pretrained(state: TrainState, directory: str, mesh, model: nn.Module) -> TrainState:
  """`state` with the pretrained weights of `directory` (transfer learning, `config.init_from`).

  The classifier is loaded only when it fits (same number of classes); otherwise it keeps its fresh
  initialisation. The EMA starts from the loaded weights; the optimizer state is untouched (it does
  not depend on parameter values at initialisation). Pretrained directories hold the plain block
  layout; for a `model` with `scan_blocks` the weights are stacked into its scanned layout.
  """
  scanned = getattr(model, 'scan_blocks', False)
  target = {'params': jax.device_get(state.params), 'batch_stats': jax.device_get(state.batch_stats)}
  if scanned:
    target = efficientnet.unscan_block_variables(target, model.blocks)
  variables, reinitialised = pretrained.transfer_pretrained(directory, target)
  if scanned:  # stacked on the host, so that each device_put below makes its own copy of every leaf
    variables = jax.device_get(efficientnet.scan_block_variables(variables, model.blocks))
  logging.info('Started from pretrained weights in %s%s.', directory,
               f'; new (randomly initialised): {", ".join(reinitialised)}' if reinitialised else '')
  # Two device copies: the raw and the EMA weights are separate (donated) buffers.
  raw, ema = (jax.device_put(variables, sharding.replicated_sharding(mesh)) for _ in range(2))
  return state.replace(params=raw['params'], batch_stats=raw['batch_stats'],
                       ema_params=ema['params'], ema_batch_stats=ema['batch_stats'])


def abstract_train_state(init_fn, seed: int, mesh) -> TrainState:
  """Shapes, dtypes and shardings of the state, without compiling `init_fn` (restore target)."""
  replicated = sharding.replicated_sharding(mesh)
  shapes = jax.eval_shape(init_fn, seed)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      shapes)


# ----------------------------------------------------------------------------------------------
# Train step


def _all_finite(tree) -> jax.Array:
  """Scalar bool: every element of every leaf is finite (no NaN, no ±Inf)."""
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(config, model: nn.Module, tx: optax.GradientTransformation,
                    learning_rate_fn, num_classes: int, mesh, bn_group_size: int,
                    family: str = 'efficientnet', use_shard_map: bool | None = None,
                    frozen_backbone: bool = False, steps_per_call: int = 1):
  """Returns the jitted `train_step(state, batch) -> (state, metrics)`.

  The state is donated and replicated; the batch is sharded P('data'). Batch-norm statistics are
  averaged over `bn_group_size` consecutive devices: the whole mesh needs nothing special (jit sees
  the global batch), smaller groups run the loss and gradients under `jax.shard_map`, with the
  model's BN layers averaging over `sharding.axis_index_groups`, and gradients, loss and new BN
  statistics averaged over the whole 'data' axis (like the reference's CrossShardOptimizer).
  `family` picks the normalisation constants ('lite' models use 127/128).
  `use_shard_map=True` forces that path even for global groups (tests compare the two).
  `frozen_backbone=True` (fine-tuning's first steps) trains only the classifier: everything else
  runs in inference mode (moving BN statistics, no dropout or drop-path), keeps its parameters and
  statistics, and sits behind `stop_gradient`, so XLA drops the backbone's backward pass and such
  a step costs little more than a forward pass.
  `steps_per_call=k > 1` returns `train_steps(state, batches) -> (state, metrics)` instead: k
  steps in one compiled call (`lax.scan`), over batches stacked on a leading axis of length k
  (`sharding.make_global_batch(..., stacked=True)`), metrics stacked the same way; the same updates
  as k calls of the one-step function. Why: XLA:CPU allocates a call's temporaries afresh, and the
  kernel faults in every page of them (4 GB for B0 at batch 32), so on CPU B0 trains 35-45% faster
  with k = 8-16; elsewhere it saves k - 1 dispatches (the reference's `iterations_per_loop`).

  metrics: loss (CE + L2), cross_entropy, learning_rate, grad_norm, grads_finite and
  state_finite (1.0 when the gradients / the updated params and BN statistics are all finite), and
  skipped (1.0 when config.nan_policy='skip' kept the old state because something was not finite;
  the step counter still advances, so the next step reads the next batch).
  """
  num_devices = mesh.size
  if use_shard_map is None:
    use_shard_map = bn_group_size != num_devices
  mean, std = data_lib.normalization_constants(family)
  compute_dtype = model.dtype
  label_smoothing = config.label_smoothing
  weight_decay = config.weight_decay
  ema_decay = config.moving_average_decay
  skip_nonfinite = config.nan_policy == 'skip'

  if use_shard_map:
    groups = sharding.axis_index_groups(bn_group_size, num_devices)
    axis_name = sharding.DATA_AXIS if bn_group_size > 1 else None
    forward_model = model.clone(bn_axis_name=axis_name, bn_axis_index_groups=groups)
  else:
    forward_model = model

  def loss_and_grads(params, batch_stats, batch, rng):
    """Loss, gradients and new BN statistics over the batch this code sees."""
    images = data_lib.normalize_images(batch['image'], mean, std, compute_dtype)
    if 'mixup_label' in batch:
      targets = data_lib.mixup_one_hot(batch['label'], batch['mixup_label'],
                                       batch['mixup_weight'], num_classes)
    else:
      targets = batch['label']
    def loss_fn(params):
      if frozen_backbone:
        # The backbone runs as at evaluation (BN normalises with the loaded moving statistics,
        # no drop-path), so the classifier learns on the features it will see at test time.
        params = _freeze_backbone(params, jax.lax.stop_gradient)
        logits = forward_model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                     train=False)
        new_batch_stats = batch_stats
      else:
        logits, new_variables = forward_model.apply(
            {'params': params, 'batch_stats': batch_stats}, images, train=True,
            mutable=['batch_stats'], rngs={'dropout': rng})
        new_batch_stats = new_variables['batch_stats']
      cross_entropy = optim.cross_entropy_loss(logits, targets, num_classes, label_smoothing)
      loss = cross_entropy + weight_decay * optim.l2_loss(params)
      return loss, (cross_entropy, new_batch_stats)

    (loss, (cross_entropy, new_batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    return loss, cross_entropy, grads, new_batch_stats

  if use_shard_map:
    def per_device(params, batch_stats, batch, rng):
      # Different dropout / drop-path masks on every device.
      rng = jax.random.fold_in(rng, jax.lax.axis_index(sharding.DATA_AXIS))
      loss, cross_entropy, grads, new_batch_stats = loss_and_grads(params, batch_stats, batch, rng)
      # Every device holds the same number of examples, so the mean of per-device means is the
      # global mean: the same update as one device with the whole batch.
      return jax.lax.pmean((loss, cross_entropy, grads, new_batch_stats), sharding.DATA_AXIS)

    # check_vma=False: gradients w.r.t. the replicated params stay per-device (no implicit psum)
    # and are averaged by the explicit pmean above.
    compute = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(sharding.DATA_AXIS), P()),
                            out_specs=P(), check_vma=False)
  else:
    compute = loss_and_grads

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    loss, cross_entropy, grads, new_batch_stats = compute(state.params, state.batch_stats, batch,
                                                          rng)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    if frozen_backbone:  # Also no decoupled weight decay (AdamW, LARS) on frozen parameters.
      updates = _freeze_backbone(updates, jnp.zeros_like)
    new_params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=new_params, batch_stats=new_batch_stats,
        opt_state=new_opt_state,
        ema_params=optim.update_ema(state.ema_params, new_params, state.step, ema_decay),
        ema_batch_stats=optim.update_ema(state.ema_batch_stats, new_batch_stats, state.step,
                                         ema_decay))
    grads_finite = _all_finite(grads)
    state_finite = _all_finite((new_params, new_batch_stats))
    skipped = jnp.zeros((), jnp.bool_)
    if skip_nonfinite:
      skipped = ~(jnp.isfinite(loss) & grads_finite & state_finite)
      kept = state.replace(step=new_state.step)
      new_state = jax.tree.map(lambda old, new: jnp.where(skipped, old, new), kept, new_state)
    metrics = dict(loss=loss, cross_entropy=cross_entropy,
                   learning_rate=learning_rate_fn(state.step), grad_norm=optax.tree.norm(grads),
                   grads_finite=grads_finite.astype(jnp.float32),
                   state_finite=state_finite.astype(jnp.float32),
                   skipped=skipped.astype(jnp.float32))
    return new_state, metrics

  if steps_per_call < 1:
    raise ValueError(f'steps_per_call must be >= 1, got {steps_per_call}.')

  def train_steps(state: TrainState, batches):
    return jax.lax.scan(train_step, state, batches, length=steps_per_call)

  stacked = steps_per_call > 1
  replicated = sharding.replicated_sharding(mesh)
  return jax.jit(train_steps if stacked else train_step,
                 in_shardings=(replicated, sharding.batch_sharding(mesh, stacked)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _freeze_backbone(params, freeze, head: str = 'classifier'):
  """`freeze` applied to every top-level module's parameters except the classifier's."""
  return {name: (value if name == head else jax.tree.map(freeze, value))
          for name, value in params.items()}


# ----------------------------------------------------------------------------------------------
# Eval step


def make_eval_step(model: nn.Module, mesh, family: str = 'efficientnet'):
  """Returns jitted `eval_step(params, batch_stats, batch) -> {top1, top5, count}` (sums).

  Called with the EMA weights and with the raw weights; masked (padding) examples count zero, so
  summing over the eval iterator counts every example of the split exactly once.
  """
  mean, std = data_lib.normalization_constants(family)

  def eval_step(params, batch_stats, batch):
    images = data_lib.normalize_images(batch['image'], mean, std, model.dtype)
    logits = model.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    mask = batch['mask']
    return dict(top1=optim.topk_correct(logits, batch['label'], 1, mask),
                top5=optim.topk_correct(logits, batch['label'], min(5, logits.shape[-1]), mask),
                count=jnp.sum(mask))

  replicated = sharding.replicated_sharding(mesh)
  return jax.jit(eval_step, in_shardings=(replicated, replicated, sharding.batch_sharding(mesh)),
                 out_shardings=replicated)


def evaluate(eval_step, state: TrainState, eval_batches, mesh) -> dict[str, float]:
  """Top-1 / top-5 accuracy over the whole eval split, with EMA and with raw weights."""
  totals = {'ema': np.zeros(3), 'raw': np.zeros(3)}
  for local_batch in eval_batches:
    batch = sharding.make_global_batch(local_batch, mesh)
    for name, params, batch_stats in (('ema', state.ema_params, state.ema_batch_stats),
                                      ('raw', state.params, state.batch_stats)):
      counts = eval_step(params, batch_stats, batch)
      totals[name] += np.asarray([counts['top1'], counts['top5'], counts['count']], np.float64)
  metrics = {}
  for name, prefix in (('raw', 'eval'), ('ema', 'eval_ema')):
    top1, top5, count = totals[name]
    metrics[f'{prefix}_top1'] = float(top1 / max(count, 1))
    metrics[f'{prefix}_top5'] = float(top5 / max(count, 1))
  metrics['eval_examples'] = int(totals['raw'][2])
  return metrics


# ----------------------------------------------------------------------------------------------
# Metrics output: console, metrics.jsonl, TensorBoard (process 0 only)


class MetricWriter:
  """Writes metric dicts to metrics.jsonl and TensorBoard event files in the workdir."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    if not self._enabled:
      return
    import tensorflow as tf  # Only for TensorBoard event files.
    self._tf = tf
    self._summary_writer = tf.summary.create_file_writer(workdir)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({'step': int(step), **metrics}) + '\n')
    self._jsonl.flush()
    with self._summary_writer.as_default():
      for name, value in metrics.items():
        group = 'eval' if name.startswith('eval') else 'train'
        self._tf.summary.scalar(f'{group}/{name}', value, step=step)
    self._summary_writer.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._summary_writer.close()


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s'


def _write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as file:
      file.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


# ----------------------------------------------------------------------------------------------
# The loop


def _nonfinite_quantity(metrics: dict) -> str | None:
  """Names what was not finite in one step's metrics (loss, gradients, new state), or None."""
  loss = float(metrics['loss'])
  if not math.isfinite(loss):
    return f'the loss ({loss})'
  if float(metrics['grads_finite']) < 1:
    return f'the gradients (global norm {float(metrics["grad_norm"])})'
  if float(metrics['state_finite']) < 1:
    return 'the updated parameters or batch-norm statistics'
  return None


class NonFiniteGuard:
  """Applies config.nan_policy to the metrics of finished steps (on the host, after device_get).

  'stop' raises NonFiniteLossError at the first step whose loss, gradients or updated state is not
  finite, before that state can be saved; 'skip' logs each step the train step skipped (its update
  was not applied) and raises after `max_consecutive_skips` skipped steps in a row, since then the
  run is not recovering; 'ignore' checks nothing.
  """

  def __init__(self, policy: str, max_consecutive_skips: int):
    self.policy = policy
    self.max_consecutive_skips = max_consecutive_skips
    self.skipped_steps = 0  # in this process's run; not stored in checkpoints
    self.consecutive_skips = 0

  def check(self, pending_metrics: list[tuple[int, dict]]) -> None:
    if self.policy == 'ignore':
      return
    advice = ('The last good checkpoint in the workdir is intact. Lower config.base_learning_rate '
              '(or raise config.warmup_epochs)')
    for step, metrics in pending_metrics:
      what = _nonfinite_quantity(metrics)
      if self.policy == 'stop':
        if what is not None:
          raise NonFiniteLossError(
              f'Training diverged at step {step} ({what} is not finite); stopped without saving that '
              f'state. {advice}, or set config.nan_policy="skip" to skip such steps.')
        continue
      if float(metrics['skipped']) < 1:
        self.consecutive_skips = 0
        continue
      self.skipped_steps += 1
      self.consecutive_skips += 1
      logging.warning('Skipped step %d: %s is not finite; its update was not applied (%d in a row, '
                      '%d in this run).', step, what, self.consecutive_skips, self.skipped_steps)
      if self.consecutive_skips >= self.max_consecutive_skips:
        raise NonFiniteLossError(
            f'Training diverged at step {step} ({what} is not finite) and the last '
            f'{self.consecutive_skips} steps were all skipped (config.max_consecutive_nan_skips='
            f'{self.max_consecutive_skips}); stopped. {advice}.')


def steps_in_next_call(step: int, num_steps: int, config) -> int:
  """How many steps the loop runs in its next compiled call, starting after `step`.

  config.steps_per_loop, unless that would run past the next step that logs, evaluates, saves or
  ends the run, or the step is one of the first config.freeze_backbone_steps (their own program):
  then one. So a multi-step call never hides a step the loop acts on, and at most two programs
  (k steps and one step) are compiled.
  """
  per_loop = config.steps_per_loop
  if per_loop == 1 or step < config.freeze_backbone_steps:
    return 1
  next_multiple = lambda every: (step // every + 1) * every  # noqa: E731
  boundaries = [num_steps, next_multiple(config.log_every_steps)]
  boundaries += [next_multiple(every) for every in (config.eval_every_steps,
                                                    config.checkpoint_every_steps) if every > 0]
  return per_loop if min(boundaries) - step >= per_loop else 1


def _per_step_metrics(pending: list[tuple[int, int, dict]]) -> list[tuple[int, dict]]:
  """[(first step, step count, metrics)] fetched from the devices -> [(step, that step's metrics)]."""
  per_step = []
  for first, count, metrics in pending:
    if count == 1:
      per_step.append((first, metrics))
    else:
      per_step += [(first + i, {name: value[i] for name, value in metrics.items()})
                   for i in range(count)]
  return per_step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` when it holds a checkpoint), evaluates, returns final metrics.

  The returned dict holds step, train_loss and the last eval metrics (eval_top1, eval_top5,
  eval_ema_top1, eval_ema_top5), plus preempted=True when stopped by a preemption notice.
  """
  # ---- Mesh and config checks (before any compute).
  mesh = sharding.create_mesh()
  plan = validate_config(config, mesh)
  checkpoint_dir = os.path.join(workdir, CHECKPOINT_SUBDIR)
  os.makedirs(workdir, exist_ok=True)
  checkpointer = checkpoint_lib.Checkpointer(
      checkpoint_dir, max_to_keep=config.checkpoint_max_to_keep,
      keep_best=config.checkpoint_keep_best, async_save=config.checkpoint_async)
  # What every checkpoint of this run records, and what a checkpoint to resume must match.
  checkpoint_metadata = {'model_name': plan.model_spec.name, 'image_size': plan.image_size,
                         'scan_blocks': bool(config.scan_blocks)}
  saved_metadata = checkpointer.read_metadata()
  if saved_metadata is not None:
    checkpoint_lib.check_compatible(saved_metadata, **checkpoint_metadata)
  logging.info('Model %s at %dpx on %d devices (%d processes); global batch %d (%d per device); '
               'batch-norm group %d.', plan.model_spec.name, plan.image_size, mesh.size,
               jax.process_count(), config.batch_size, plan.per_device_batch_size,
               plan.bn_group_size)
  _write_config(config, workdir)

  # ---- Input.
  info = data_lib.dataset_info(config.dataset, config.data_dir, config.train_split,
                               config.eval_split)
  num_steps = total_train_steps(config, info.num_train_examples)
  steps_per_epoch = info.num_train_examples / config.batch_size
  data_options = dict(name=config.dataset, data_dir=config.data_dir, image_size=plan.image_size)
  eval_batches = data_lib.create_eval_iterator(
      per_host_batch_size=plan.per_host_eval_batch_size, split=info.eval_split,
      crop_padding=config.eval_crop_padding, **data_options)

  # ---- Model, optimizer, state.
  model = create_model(config, info.num_classes, plan.compute_dtype)
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch, num_steps)
  tx = optim.create_optimizer(config, learning_rate_fn)
  init_fn = make_init_fn(model, tx, plan.image_size)
  restored = checkpointer.restore_latest(abstract_train_state(init_fn, config.seed, mesh),
                                         **checkpoint_metadata)
  if restored is not None:
    state, start_step = restored.state, int(restored.metadata['data_position'])
    logging.info('Resumed from %s at step %d.', checkpoint_dir, restored.step)
  else:
    state, start_step = create_train_state(init_fn, config.seed, mesh), 0
    if config.init_from:
      state = start_from_pretrained(state, config.init_from, mesh, model)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('%s: %d parameters; %d train steps (%.1f epochs of %d images).',
               plan.model_spec.name, num_params, num_steps, num_steps / steps_per_epoch,
               info.num_train_examples)

  train_batches = data_lib.create_train_iterator(
      per_host_batch_size=plan.per_host_batch_size, start_step=start_step,
      split=info.train_split, seed=config.seed, augment_name=config.augment_name,
      randaug_num_layers=config.randaug_num_layers, randaug_magnitude=config.randaug_magnitude,
      mixup_alpha=config.mixup_alpha, train_crop=config.train_crop,
      random_flip=config.random_flip, crop_padding=config.eval_crop_padding,
      shuffle_buffer_size=config.shuffle_buffer_size, **data_options)

  # ---- Compiled steps.
  train_step = make_train_step(config, model, tx, learning_rate_fn, info.num_classes, mesh,
                               plan.bn_group_size, family=plan.model_spec.family)
  eval_step = make_eval_step(model, mesh, family=plan.model_spec.family)
  multi_train_step = make_train_step(  # used (and compiled) only when steps_per_loop > 1
      config, model, tx, learning_rate_fn, info.num_classes, mesh, plan.bn_group_size,
      family=plan.model_spec.family, steps_per_call=config.steps_per_loop)
  frozen_train_step = make_train_step(
      config, model, tx, learning_rate_fn, info.num_classes, mesh, plan.bn_group_size,
      family=plan.model_spec.family, frozen_backbone=True)  # compiled only if used

  # ---- Loop.
  writer = MetricWriter(workdir)
  pending: list[tuple[int, int, dict]] = []  # (first step, count, device metrics) not yet logged
  final_metrics: dict[str, Any] = {'step': start_step}
  last_log_time, last_log_step, run_start_time = time.time(), start_step, time.time()
  step = start_step

  nonfinite_guard = NonFiniteGuard(config.nan_policy, config.max_consecutive_nan_skips)

  def save(step, eval_metrics=None, force=False):
    best_metric = None
    if eval_metrics:  # Keep-best follows the EMA top-1, the accuracy the reference reports.
      best_metric = {checkpoint_lib.BEST_METRIC: eval_metrics['eval_ema_top1']}
    checkpointer.save(step, state, checkpoint_metadata, data_position=step, metrics=best_metric,
                      force=force)

  checkpointer.treat_sigterm_as_preemption()  # SIGTERM: save after this step and exit cleanly
  try:
    while step < num_steps:
      count = steps_in_next_call(step, num_steps, config)
      if count > 1:
        batches = [next(train_batches) for _ in range(count)]
        stacked = jax.tree.map(lambda *arrays: np.stack(arrays), *batches)
        state, metrics = multi_train_step(state, sharding.make_global_batch(stacked, mesh,
                                                                            stacked=True))
      else:
        step_fn = frozen_train_step if step < config.freeze_backbone_steps else train_step
        state, metrics = step_fn(state, sharding.make_global_batch(next(train_batches), mesh))
      pending.append((step + 1, count, metrics))
      step += count

      is_last = step == num_steps
      log_now = step % config.log_every_steps == 0 or is_last
      eval_now = is_last or (config.eval_every_steps > 0 and step % config.eval_every_steps == 0)
      save_now = is_last or eval_now or (config.checkpoint_every_steps > 0 and
                                         step % config.checkpoint_every_steps == 0)
      # Every step of the call is offered: all hosts agree on the step of a preemption notice.
      preempted = any(checkpointer.reached_preemption(s) for s in range(step - count + 1, step + 1))
      if not (log_now or eval_now or save_now or preempted):
        continue

      pending = _per_step_metrics(jax.device_get(pending))
      nonfinite_guard.check(pending)
      if log_now:
        now = time.time()
        steps_done = step - last_log_step
        images_per_sec = steps_done * config.batch_size / max(now - last_log_time, 1e-9)
        applied = [m for _, m in pending if not m['skipped']] or [m for _, m in pending]
        train_metrics = {
            'train_loss': float(np.mean([m['loss'] for m in applied])),
            'train_cross_entropy': float(np.mean([m['cross_entropy'] for m in applied])),
            'learning_rate': float(pending[-1][1]['learning_rate']),
            'grad_norm': float(pending[-1][1]['grad_norm']),
            'images_per_sec': images_per_sec,
            'epoch': step / steps_per_epoch,
        }
        if config.nan_policy == 'skip':
          train_metrics['skipped_steps'] = nonfinite_guard.skipped_steps
        eta = (num_steps - step) * (now - last_log_time) / max(steps_done, 1)
        logging.info('step %d/%d  loss %.4f  lr %.5f  %.1f img/s  ETA %s', step, num_steps,
                     train_metrics['train_loss'], train_metrics['learning_rate'],
                     images_per_sec, _format_duration(eta))
        final_metrics.update(train_metrics)
        last_log_time, last_log_step = now, step
      pending = []

      record, eval_metrics = dict(train_metrics) if log_now else {}, None
      if eval_now:
        logging.info('step %d: evaluating (%d batches)', step, len(eval_batches))
        eval_metrics = evaluate(eval_step, state, eval_batches, mesh)
        logging.info('step %d  eval top-1 %.4f top-5 %.4f | EMA top-1 %.4f top-5 %.4f', step,
                     eval_metrics['eval_top1'], eval_metrics['eval_top5'],
                     eval_metrics['eval_ema_top1'], eval_metrics['eval_ema_top5'])
        final_metrics.update(eval_metrics)
        record.update(eval_metrics)
        last_log_time = time.time()  # Do not count eval time in train throughput.
      if record:
        writer.write(step, record)
      final_metrics['step'] = step
      if save_now or preempted:
        save(step, eval_metrics, force=preempted)
      if preempted and not is_last:
        logging.warning('Preemption notice: saved step %d; exiting cleanly. Run the same command '
                        'to resume.', step)
        final_metrics['preempted'] = True
        break
  finally:
    checkpointer.close()
    writer.close()
  logging.info('Done: step %d in %s. %s', step, _format_duration(time.time() - run_start_time),
               json.dumps({k: v for k, v in final_metrics.items()}, sort_keys=True))
  return final_metrics
