"""Command-line entry point: flags -> `train.train_and_evaluate(config, workdir)`.

    python -m effnet_jax.main --config configs/b0.py --workdir /tmp/b0
    python -m effnet_jax.main --config configs/phi.py:2.5 --workdir /tmp/phi2.5 \
        --config.batch_size=1024

Configs are locked ml_collections ConfigDicts, so an unknown `--config.field` is an error. All the
work lives in importable functions (effnet_jax.train) so notebooks and tests can call them.

Errors the user can act on (a bad config value, a missing dataset, a diverged run, a failed
checkpoint save) end the program with `error: <what to change>` and exit status 1 instead of a
traceback; `--verbosity=1` logs the traceback too.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from effnet_jax import checkpoint
from effnet_jax import sharding
from effnet_jax import train

# ValueError: validation (train.validate_config, sharding, data); FileNotFoundError: datasets
# (data.DatasetNotPreparedError) and workdirs; the other two are raised by the loop.
USER_ERRORS = (ValueError, FileNotFoundError, train.NonFiniteLossError,
               checkpoint.CheckpointSaveError)

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
  try:
    # Multi-host jobs (Cloud TPU pods, --config.coordinator_address=...) join the JAX runtime
    # before anything touches a device.
    sharding.maybe_initialize_distributed(config)
    logging.info('Config:\n%s', config)
    train.train_and_evaluate(config, _WORKDIR.value)
  except USER_ERRORS as error:
    logging.vlog(1, 'Traceback of the error below:', exc_info=True)
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main)
