"""Mixup (reference-spec.md §3.6) on a host batch, and the soft targets it implies.

Each example i is mixed with example B-1-i (the batch reversed) using its own weight
lambda_i = max(l, 1 - l), l ~ Beta(alpha, alpha). Instead of soft labels the batch carries
'label' (own class), 'mixup_label' (the partner's class) and 'mixup_weight' (lambda_i), so the
pipeline needs no num_classes; `mixup_one_hot` builds the soft targets on device:
    target_i = lambda_i * one_hot(label_i) + (1 - lambda_i) * one_hot(mixup_label_i).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import tensorflow as tf


def sample_beta(shape, alpha: float, seed) -> tf.Tensor:
  """Beta(alpha, alpha) from two stateless Gamma(alpha) draws."""
  seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  gamma_a = tf.random.stateless_gamma(shape, seed_a, alpha=alpha)
  gamma_b = tf.random.stateless_gamma(shape, seed_b, alpha=alpha)
  return gamma_a / (gamma_a + gamma_b)


def mixup_batch(batch: dict, alpha: float, seed) -> dict:
  """Mix a batch {'image': float [B, H, W, 3], 'label': int [B], ...} with its reverse."""
  images, labels = batch['image'], batch['label']
  batch_size = tf.shape(labels)[0]
  weights = sample_beta([batch_size], alpha, seed)
  weights = tf.maximum(weights, 1.0 - weights)
  image_weights = tf.reshape(weights, [-1, 1, 1, 1])
  mixed = image_weights * images + (1.0 - image_weights) * tf.reverse(images, axis=[0])
  return {**batch, 'image': mixed, 'mixup_label': tf.reverse(labels, axis=[0]),
          'mixup_weight': weights}


def mixup_one_hot(labels, mixup_labels, mixup_weights, num_classes: int):
  """Soft targets [B, num_classes] from a mixup batch (jnp, for use on device)."""
  weights = jnp.asarray(mixup_weights, jnp.float32)[:, None]
  return (weights * jax.nn.one_hot(labels, num_classes) +
          (1.0 - weights) * jax.nn.one_hot(mixup_labels, num_classes))
