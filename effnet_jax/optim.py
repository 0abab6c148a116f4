"""Optimizer, learning-rate schedule, L2 loss, EMA and classification losses.

Everything here follows the tensorflow/tpu EfficientNet recipe (reference-spec.md §2.2-2.5) so that a
run with the default config trains like the reference.

Config fields read here (defaults in `CONFIG_DEFAULTS`, copied into configs/default.py):

  batch_size              global train batch (images per step, summed over all devices)
  base_learning_rate      lr per 256 images; lr0 = base_learning_rate * batch_size / 256
  warmup_epochs           linear warm-up from 0 to lr0 over int(warmup_epochs * steps_per_epoch) steps
  lr_schedule             'exponential' | 'cosine' | 'constant' (after warm-up)
  lr_decay_factor         'exponential' (staircase): lr0 * lr_decay_factor ** floor(step / decay_steps), where
  lr_decay_epochs         decay_steps = lr_decay_epochs * steps_per_epoch and step is the GLOBAL step
                          (warm-up not subtracted), as in the reference
  optimizer               'rmsprop' | 'sgd' | 'adamw' | 'lars'
  rmsprop_decay           TF1 RMSProp rho (decay of the squared-gradient average)
  rmsprop_momentum        TF1 RMSProp momentum
  rmsprop_epsilon         TF1 RMSProp epsilon, added INSIDE the square root
  momentum                momentum of 'sgd' and 'lars' (0 = plain SGD)
  nesterov                Nesterov momentum for 'sgd' and 'lars'
  adamw_b1, adamw_b2, adamw_epsilon, adamw_weight_decay    'adamw' (decoupled decay, BN and biases excluded)
  lars_weight_decay, lars_trust_coefficient, lars_epsilon
                          'lars' (BN and biases excluded from decay and from the trust ratio)
  weight_decay            coefficient of `l2_loss` that the trainer adds to the loss (coupled L2, the
                          reference's weight decay). Set it to 0 with 'adamw'/'lars' unless you want both
                          kinds of decay.
  label_smoothing         used by the trainer with `cross_entropy_loss`
  moving_average_decay    EMA decay cap used by the trainer with `ema_decay`/`update_ema`
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

CONFIG_DEFAULTS = dict(
    base_learning_rate=0.016,
    warmup_epochs=5.0,
    lr_schedule='exponential',
    lr_decay_factor=0.97,
    lr_decay_epochs=2.4,
    optimizer='rmsprop',
    rmsprop_decay=0.9,
    rmsprop_momentum=0.9,
    rmsprop_epsilon=1e-3,
    momentum=0.9,
    nesterov=False,
    adamw_b1=0.9,
    adamw_b2=0.999,
    adamw_epsilon=1e-8,
    adamw_weight_decay=0.05,
    lars_weight_decay=1e-5,
    lars_trust_coefficient=0.001,
    lars_epsilon=0.0,
    weight_decay=1e-5,
    label_smoothing=0.1,
    moving_average_decay=0.9999,
)

LR_SCHEDULES = ('exponential', 'cosine', 'constant')
OPTIMIZERS = ('rmsprop', 'sgd', 'adamw', 'lars')


# ----------------------------------------------------------------------------------------------
# Learning rate


def create_learning_rate_fn(config, steps_per_epoch: float, total_steps: int | None = None
                            ) -> optax.Schedule:
    """Returns step -> learning rate, the reference schedule (§2.2).

    Args:
      config: reads batch_size, base_learning_rate, warmup_epochs, lr_schedule, lr_decay_factor,
        lr_decay_epochs.
      steps_per_epoch: train images / global batch size; may be fractional (625.57 at 2048), as in
        the reference.
      total_steps: total train steps, needed by 'cosine' (whose cosine runs over the global step).
    """
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f'Unknown config.lr_schedule={config.lr_schedule!r}; '
                         f'choose one of {", ".join(LR_SCHEDULES)}.')
    if steps_per_epoch <= 0:
        raise ValueError(f'steps_per_epoch must be positive, got {steps_per_epoch}.')
    if config.lr_schedule == 'cosine' and not total_steps:
        raise ValueError("lr_schedule='cosine' needs total_steps (the number of train steps).")
    peak_lr = config.base_learning_rate * config.batch_size / 256
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    decay_steps = config.lr_decay_epochs * steps_per_epoch

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if config.lr_schedule == 'exponential':
            lr = peak_lr * config.lr_decay_factor ** jnp.floor(step / decay_steps)
        elif config.lr_schedule == 'cosine':
            lr = 0.5 * peak_lr * (1 + jnp.cos(jnp.pi * step / total_steps))
        else:
            lr = jnp.full_like(step, peak_lr)
        if warmup_steps > 0:
            lr = jnp.where(step < warmup_steps, peak_lr * step / warmup_steps, lr)
        return lr

    return schedule


# ----------------------------------------------------------------------------------------------
# Parameter selection: which variables are batch-norm parameters / get weight decay

_BN_TOKEN = re.compile(r'bn\d*')


def _key_name(key) -> str:
    """A path entry (jax key object or plain string) as a string."""
    for attribute in ('key', 'name', 'idx'):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def is_batch_norm_param(path: Sequence[Any]) -> bool:
    """True if a parameter path belongs to a batch-norm layer.

    A path component marks batch norm when, case-insensitively, it contains 'batchnorm' once
    underscores are removed ('BatchNorm_0', 'batch_normalization' of converted TF weights), or one of
    its '_'-separated tokens is 'bn' optionally followed by digits ('bn', 'bn0', 'stem_bn', 'head_bn').
    Tokens are matched whole so that names such as 'subnet' or 'bnorm_proj' do not count.

    Args:
      path: a key path from `jax.tree_util.tree_flatten_with_path`, or a sequence of strings.
    """
    for key in path:
        name = _key_name(key).lower()
        if 'batchnorm' in name.replace('_', ''):
            return True
        if any(_BN_TOKEN.fullmatch(token) for token in name.split('_')):
            return True
    return False


def weight_decay_mask(params):
    """Pytree of bools: True for parameters that decoupled decay / LARS should touch.

    Excludes batch-norm parameters and biases, as the reference LARS does (§2.3).
    """
    def decays(path, _):
        return not is_batch_norm_param(path) and _key_name(path[-1]) != 'bias'
    return jax.tree_util.tree_map_with_path(decays, params)


def l2_loss(params) -> jax.Array:
    """0.5 * sum of squares of every non-batch-norm parameter (reference §2.4).

    Kernels, SE biases and the classifier bias are included; BN scale/bias are not (see
    `is_batch_norm_param`). The trainer adds config.weight_decay * l2_loss(params) to the loss, so the
    gradient contribution is weight_decay * v, exactly TF's tf.nn.l2_loss regulariser.
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    squares = [jnp.sum(jnp.square(value.astype(jnp.float32)))
               for path, value in leaves if not is_batch_norm_param(path)]
    return 0.5 * sum(squares) if squares else jnp.zeros((), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Optimizers


def create_optimizer(config, learning_rate_fn: optax.ScalarOrSchedule
                     ) -> optax.GradientTransformation:
    """Builds the optimizer named by config.optimizer.

    'rmsprop' reproduces TF1 RMSPropOptimizer exactly (checked in tests/test_optim.py against a
    hand-written TF1 update): ms starts at ONE, ms = rho*ms + (1-rho)*g^2,
    mom = momentum*mom + lr*g/sqrt(ms + eps), w -= mom. Optax scales by the learning rate before the
    momentum trace, so the lr of each step is folded into the buffer as in TF.
    """
    name = config.optimizer
    if name == 'rmsprop':
        return optax.rmsprop(learning_rate_fn, decay=config.rmsprop_decay, eps=config.rmsprop_epsilon,
                             initial_scale=1.0, eps_in_sqrt=True, momentum=config.rmsprop_momentum)
    if name == 'sgd':
        return optax.sgd(learning_rate_fn, momentum=config.momentum or None, nesterov=config.nesterov)
    if name == 'adamw':
        return optax.adamw(learning_rate_fn, b1=config.adamw_b1, b2=config.adamw_b2,
                           eps=config.adamw_epsilon, weight_decay=config.adamw_weight_decay,
                           mask=weight_decay_mask)
    if name == 'lars':
        return optax.lars(learning_rate_fn, weight_decay=config.lars_weight_decay,
                          weight_decay_mask=weight_decay_mask,
                          trust_coefficient=config.lars_trust_coefficient, eps=config.lars_epsilon,
                          trust_ratio_mask=weight_decay_mask, momentum=config.momentum,
                          nesterov=config.nesterov)
    raise ValueError(f'Unknown config.optimizer={name!r}; choose one of {", ".join(OPTIMIZERS)}.')


# ----------------------------------------------------------------------------------------------
# Exponential moving average of the weights (reference §2.5)


def ema_decay(step, decay: float) -> jax.Array:
    """TF ExponentialMovingAverage(num_updates=step) decay: min(decay, (1+step)/(10+step)).

    The warm-up term lets early averages follow the fast-moving weights (0.1 at step 0, 0.5 at
    step 8) instead of being dominated by the initialisation; there is no bias correction.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_tree, new_tree, step, decay: float):
    """ema <- d*ema + (1-d)*new with d = ema_decay(step, decay), leaf by leaf.

    Apply to params AND batch_stats (the reference averages BN moving mean/variance too); the EMA
    keeps each leaf's dtype.
    """
    d = ema_decay(step, decay)
    return jax.tree.map(lambda ema, new: (d * ema + (1 - d) * new).astype(ema.dtype),
                        ema_tree, new_tree)


# ----------------------------------------------------------------------------------------------
# Loss and accuracy


def _masked_sum(values: jax.Array, mask) -> jax.Array:
    if mask is None:
        return jnp.sum(values)
    return jnp.sum(values * jnp.asarray(mask, values.dtype))


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, num_classes: int,
                       label_smoothing: float = 0.0, mask=None) -> jax.Array:
    """Label-smoothed softmax cross-entropy, mean over the (unmasked) batch.

    Targets are onehot * (1 - label_smoothing) + label_smoothing / num_classes (TF's
    softmax_cross_entropy(label_smoothing=...)).

    Args:
      logits: [batch, num_classes]; computed in float32 whatever their dtype.
      labels: [batch] integer classes, or [batch, num_classes] soft targets (e.g. mixup).
      mask: optional [batch] weights (1 = real example, 0 = padding).
    """
    logits = logits.astype(jnp.float32)
    if labels.ndim == logits.ndim - 1:
        labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    targets = labels.astype(jnp.float32) * (1 - label_smoothing) + label_smoothing / num_classes
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
    count = per_example.shape[0] if mask is None else jnp.sum(jnp.asarray(mask, jnp.float32))
    return _masked_sum(per_example, mask) / jnp.maximum(count, 1)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int, mask=None) -> jax.Array:
    """Number of examples whose label is among the k highest logits (sum, not mean).

    An example is correct when fewer than k classes score strictly higher than its label: this is
    TF's in_top_k rule (ties at the boundary count as correct). Sums add across batches and hosts.

    Args:
      logits: [batch, num_classes]; labels: [batch] ints or [batch, num_classes] one-hot/soft
        (argmax is taken); mask: optional [batch] weights.
    """
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, axis=-1)
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)
    num_higher = jnp.sum(logits > label_logit, axis=-1)
    return _masked_sum((num_higher < k).astype(jnp.float32), mask)
