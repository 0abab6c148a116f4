"""One process of a 2-process training run for tests/test_multiprocess.py's kill-and-restart test.

Usage: multiprocess_train_worker.py PROCESS_ID PORT WORKDIR DATA_DIR NUM_TRAIN_STEPS [STEPS_PER_LOOP]
Joins jax.distributed through the trainer's own path (sharding.maybe_initialize_distributed, with
a 10-second heartbeat timeout) and runs train_and_evaluate on the tiny digits config;
with STEPS_PER_LOOP > 1, that many steps per compiled call, logging every STEPS_PER_LOOP steps.
"""
import os
import sys

process_id, port = int(sys.argv[1]), int(sys.argv[2])
workdir, data_dir, num_train_steps = sys.argv[3], sys.argv[4], int(sys.argv[5])
steps_per_loop = int(sys.argv[6]) if len(sys.argv) > 6 else 1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, 'tests'))
from xla_env import xla_flags  # noqa: E402

os.environ['XLA_FLAGS'] = xla_flags(2)
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402
from absl import logging  # noqa: E402

logging.set_verbosity(logging.INFO)  # the test reads 'Resumed from ... at step N.' and 'Done: step N'
jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # cross-process CPU collectives

from effnet_jax import sharding, train  # noqa: E402
from test_train import tiny_config  # noqa: E402

config = tiny_config(data_dir, num_train_steps=num_train_steps, batch_size=8, eval_batch_size=40,
                     steps_per_loop=steps_per_loop, log_every_steps=steps_per_loop)
config.coordinator_address = f'127.0.0.1:{port}'
config.num_processes, config.process_id = 2, process_id
config.heartbeat_timeout_seconds = 10  # a killed peer is noticed within 10 s
config.shutdown_timeout_seconds = 30  # at exit, for a slower peer (under the test's 60-s bound)
sharding.maybe_initialize_distributed(config)
train.train_and_evaluate(config, workdir)
