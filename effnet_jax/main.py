"""Command-line entry point: flags -> `train.train_and_evaluate(config, workdir)`.

    python -m effnet_jax.main --config configs/b0.py --workdir /tmp/b0
    python -m effnet_jax.main --config configs/phi.py:2.5 --workdir /tmp/phi2.5 \
        --config.batch_size=1024

Configs are locked ml_collections ConfigDicts, so an unknown `--config.field` is an error. All the
work lives in importable functions (effnet_jax.train) so notebooks and tests can call them.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from effnet_jax import sharding
from effnet_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training config file, e.g. configs/b0.py or configs/phi.py:2.5.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard events and the config; '
    'a run resumes automatically from a checkpoint there.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  # Multi-host jobs (Cloud TPU pods, --config.coordinator_address=...) join the JAX runtime
  # before anything touches a device.
  sharding.maybe_initialize_distributed(config)
  logging.info('Config:\n%s', config)
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
