"""2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo collectives) == 1 process x 4.

The step check feeds each process its half of one global batch (sharding.make_global_batch); the
loss and updated parameters must equal a single process holding the whole batch on 4 devices. The
loop check runs train_and_evaluate on both processes (each reads its half of digits) and checks that
the eval covers all 360 test digits once and both processes agree. The fault check kills one of two
training processes and expects the other to exit within the heartbeat timeout, then resumes both.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name('multiprocess_worker.py')


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def launch(process_id, num_processes, port, devices, out_dir, data_dir):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.Popen(
      [sys.executable, str(WORKER), str(process_id), str(num_processes), str(port), str(devices),
       str(out_dir), str(data_dir)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_all(processes, timeout=400):
  outputs = []
  for process in processes:
    try:
      output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      pytest.fail('multi-process worker timed out')
    outputs.append(output)
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-4000:]


def test_two_processes_agree_with_one(tmp_path):
  import jax
  from effnet_jax import data, sharding
  from multiprocess_worker import one_step
  data_dir, multi = tmp_path / 'tfds', tmp_path / 'multi'
  multi.mkdir()
  data.dataset_info('digits', str(data_dir))  # prepare once, before two processes race to do it
  port = free_port()
  processes = [launch(i, 2, port, 2, multi, data_dir) for i in range(2)]
  try:  # The reference, meanwhile: this process alone, on 4 of its 8 devices.
    reference = one_step(sharding.create_mesh(jax.devices()[:4]))
  except BaseException:
    for process in processes:
      process.kill()
    raise
  wait_all(processes)

  for process_id in range(2):
    result = np.load(multi / f'step_{process_id}.npz')
    assert set(result.files) == set(reference)
    for name, expected in reference.items():  # rtol 1e-5 / atol 1e-6: only the reduction order differs
      np.testing.assert_allclose(result[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)

  runs = [json.load(open(multi / f'run_{i}.json')) for i in range(2)]
  for run in runs:
    run.pop('images_per_sec')  # wall-clock, measured per process
  assert runs[0] == runs[1]
  assert runs[0]['step'] == 2 and runs[0]['eval_examples'] == 360
  assert os.path.exists(multi / 'workdir' / 'checkpoints' / '2')


TRAIN_WORKER = pathlib.Path(__file__).with_name('multiprocess_train_worker.py')


def launch_training(process_id, port, workdir, data_dir, num_train_steps, steps_per_loop=1):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.Popen(
      [sys.executable, str(TRAIN_WORKER), str(process_id), str(port), str(workdir), str(data_dir),
       str(num_train_steps), str(steps_per_loop)], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def first_error(output: str) -> str:
  """The part of a worker's output worth reading: from its first traceback or fatal error."""
  starts = [i for i in (output.find('Traceback'), output.find('\nF1')) if i >= 0]
  return output[min(starts, default=max(0, len(output) - 3000)):][:3000]


def committed_steps(workdir):
  directory = workdir / 'checkpoints'
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if directory.exists() else []


def test_killing_one_process_stops_the_other_and_both_resume(tmp_path):
  """kill -9 of process 1 mid-training: process 0 exits with JAX's "another task died" error within
  the heartbeat timeout (10 s here; the bound allows for a loaded machine) instead of hanging in a
  collective; restarting both resumes from the last complete checkpoint (and runs its two steps in
  one compiled call, over batches each host stacks from its own slice)."""
  from effnet_jax import data
  data_dir, workdir = tmp_path / 'tfds', tmp_path / 'workdir'
  data.dataset_info('digits', str(data_dir))  # prepare once, before two processes race to do it
  port = free_port()
  processes = [launch_training(i, port, workdir, data_dir, 10_000) for i in range(2)]
  try:
    deadline = time.time() + 300
    while len(committed_steps(workdir)) < 1 and time.time() < deadline:
      for process in processes:
        assert process.poll() is None, first_error(process.communicate()[0])
      time.sleep(0.1)
    assert committed_steps(workdir), 'no checkpoint within 300 s'
    processes[1].kill()
    killed_at = time.time()
    output, _ = processes[0].communicate(timeout=60)
    exited_after = time.time() - killed_at
  finally:
    for process in processes:
      process.kill()
  assert processes[0].returncode != 0
  assert 'another task died' in output or 'heartbeat' in output, output[-3000:]
  assert exited_after < 60

  latest = committed_steps(workdir)[-1]
  port = free_port()
  restarted = [launch_training(i, port, workdir, data_dir, latest + 2, steps_per_loop=2)
               for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in restarted]
  for process, output in zip(restarted, outputs):
    assert process.returncode == 0, first_error(output)
  assert f'at step {latest}.' in outputs[0] and f'Done: step {latest + 2}' in outputs[0]  # logs: process 0
