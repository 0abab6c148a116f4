"""One process of tests/test_multiprocess.py's 2-process run.

Usage: multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT DEVICES_PER_PROCESS OUT_DIR DATA_DIR
Writes OUT_DIR/step_<id>.npz (loss and parameters after one train step on a fixed global batch,
of which this process feeds its own rows: `one_step`, which the test also runs in its own process
as the 1-process reference) and OUT_DIR/run_<id>.json (the metrics of a short train_and_evaluate run).
"""
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, 'tests'))


def one_step(mesh, process_id: int = 0, num_processes: int = 1) -> dict:
  """Loss and parameters (host arrays, by tree path) after one global-BN train step of the mini
  network on a fixed global batch, this process feeding its share of the rows."""
  import jax
  import numpy as np
  from effnet_jax import optim, sharding, train
  from test_train import GLOBAL_BATCH, IMAGE_SIZE, NUM_CLASSES, mini_model, step_config
  config = step_config()
  config.bn_group = 'global'
  model = mini_model()
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10.0, total_steps=100)
  tx = optim.create_optimizer(config, learning_rate_fn)
  state = train.create_train_state(train.make_init_fn(model, tx, IMAGE_SIZE), 0, mesh)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32)
  rows = slice(process_id * GLOBAL_BATCH // num_processes,
               (process_id + 1) * GLOBAL_BATCH // num_processes)
  batch = sharding.make_global_batch({'image': images[rows], 'label': labels[rows]}, mesh)
  step = train.make_train_step(config, model, tx, learning_rate_fn, NUM_CLASSES, mesh,
                               sharding.bn_group_size('global', mesh.size))
  state, metrics = step(state, batch)
  flat = {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
          for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
  return dict(loss=np.asarray(metrics['loss'].addressable_data(0)), **flat)


def main():
  process_id, num_processes, port, devices_per_process = map(int, sys.argv[1:5])
  out_dir, data_dir = sys.argv[5:7]
  from xla_env import xla_flags
  os.environ['XLA_FLAGS'] = xla_flags(devices_per_process)
  os.environ['JAX_PLATFORMS'] = 'cpu'
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # cross-process CPU collectives
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=num_processes, process_id=process_id)
  import numpy as np
  from effnet_jax import sharding, train
  from test_train import tiny_config

  np.savez(os.path.join(out_dir, f'step_{process_id}.npz'),
           **one_step(sharding.create_mesh(), process_id, num_processes))
  # The whole loop: 2 steps, checkpoint, eval over the digits test split shared across hosts.
  final = train.train_and_evaluate(
      tiny_config(data_dir, num_train_steps=2, batch_size=8, eval_batch_size=40),
      os.path.join(out_dir, 'workdir'))
  with open(os.path.join(out_dir, f'run_{process_id}.json'), 'w') as file:
    json.dump(final, file)


if __name__ == '__main__':
  main()
