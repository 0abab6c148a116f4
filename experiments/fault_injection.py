"""Fault injection: kill training at random moments, restart it, and check nothing was lost.

    python -m experiments.fault_injection --trials 50 --workdir /tmp/fi

Trains the quickstart model (configs/quickstart.py: B0 stages at half width, one block each, 32 px,
batch 64, digits) shortened to `--steps` steps with a checkpoint every 4 steps and an evaluation
every 10, as `python -m effnet_jax.main` subprocesses on one CPU device. First one uninterrupted
reference run saves and keeps a checkpoint at every step. Then chains of runs, each on a fresh workdir: start the
trainer, wait for a randomly chosen phase, send SIGKILL or SIGTERM, restart the same command on the
same workdir, repeat; a chain ends when its run completes. One kill followed by a restart is one
trial. Phases, detected from the trainer's own log lines and checkpoint directory:
  startup           after launch, before the first step (restore, compilation) - SIGKILL only: the
                    SIGTERM handler is installed when the loop starts
  step              between log lines of training steps
  checkpoint write  while Orbax's temporary step directory exists (the async save in flight)
  eval              between 'evaluating' and the eval result line
After every kill the script checks:
  - every checkpoint that was complete before the kill still restores, unless retention retired it
    because `checkpoint_max_to_keep` newer ones were committed (else: a checkpoint lost);
  - every checkpoint in the workdir equals the reference run's at the same step, bit for bit
    (params, BN statistics, optimizer state, EMA, RNG; else: a mismatch);
  - SIGTERM: the trainer saved and exited cleanly (exit status 0, 'Preemption notice: saved step N');
  - the restarted trainer resumed from the latest complete checkpoint ('Resumed from ... at step N').
At the end of each chain the final checkpoint must equal the reference's final one, bit for bit.
Exit status 1 if any check failed. Wall time on a busy 2-core VM: ~30 s per trial.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PHASES = ('startup', 'step', 'checkpoint write', 'eval')
CHECKPOINT_EVERY, EVAL_EVERY, MAX_TO_KEEP = 4, 10, 3
STEP_LINE = re.compile(r'step (\d+)/\d+  loss')
EVAL_START = re.compile(r'step (\d+): evaluating')
EVAL_DONE = re.compile(r'step (\d+)  eval top-1')
RESUMED = re.compile(r'Resumed from \S+ at step (\d+)\.')
PREEMPTED = re.compile(r'Preemption notice: saved step (\d+)')
DONE = re.compile(r'Done: step (\d+)')
SIGTERM_EXIT_TIMEOUT_S = 120  # a SIGTERM'd trainer must have saved and exited by then


def trainer_command(workdir: pathlib.Path, data_dir: pathlib.Path, steps: int,
                    max_to_keep: int = MAX_TO_KEEP, checkpoint_every: int = CHECKPOINT_EVERY) -> list[str]:
  overrides = dict(num_train_steps=steps, checkpoint_every_steps=checkpoint_every,
                   eval_every_steps=EVAL_EVERY, log_every_steps=1, data_dir=str(data_dir),
                   checkpoint_max_to_keep=max_to_keep)
  return ([sys.executable, '-m', 'effnet_jax.main', '--config', 'configs/quickstart.py',
           f'--workdir={workdir}'] + [f'--config.{name}={value}' for name, value in overrides.items()])


class Trainer:
  """One trainer subprocess; its log lines (stderr, absl) are collected by a thread."""

  def __init__(self, command: list[str], env: dict, log_path: pathlib.Path):
    self.log_file = open(log_path, 'a')
    self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self.log_file,
                                    stderr=subprocess.PIPE, text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.process.stderr:
      self.lines.append(line)
      self.log_file.write(line)
    self.log_file.flush()

  def find(self, pattern: re.Pattern) -> list[int]:
    """Integers captured by `pattern` in this process's log lines, in order."""
    return [int(m.group(1)) for line in list(self.lines) for m in [pattern.search(line)] if m]

  def running(self) -> bool:
    return self.process.poll() is None

  def wait(self, timeout: float | None = None) -> int:
    returncode = self.process.wait(timeout)
    self._reader.join(10)
    self.log_file.close()
    return returncode


def committed_steps(checkpoint_dir: pathlib.Path) -> set[int]:
  """Steps whose directory Orbax has committed (renamed from its temporary name)."""
  try:
    return {int(name) for name in os.listdir(checkpoint_dir) if name.isdigit()}
  except FileNotFoundError:
    return set()


def save_in_flight(checkpoint_dir: pathlib.Path) -> bool:
  try:
    return any('tmp' in name for name in os.listdir(checkpoint_dir))
  except FileNotFoundError:
    return False


class CheckpointReader:
  """Restores checkpoints in this process (numpy, no target) and compares them with the reference."""

  def __init__(self, reference_dir: pathlib.Path):
    import orbax.checkpoint as ocp
    self._checkpointer = ocp.StandardCheckpointer()
    self._reference_dir = reference_dir
    self._reference: dict[int, dict] = {}

  def load(self, checkpoint_dir: pathlib.Path, step: int) -> dict | None:
    """Flat {path: numpy array} of the step's train state, or None if it does not restore."""
    import jax
    import numpy as np
    try:
      state = self._checkpointer.restore(checkpoint_dir / str(step) / 'state')
    except Exception as error:  # noqa: BLE001 - any failure means "not restorable"
      print(f'    step {step} in {checkpoint_dir} does not restore: {type(error).__name__}: '
            f'{str(error)[:200]}')
      return None
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}

  def equals_reference(self, state: dict, step: int) -> bool:
    if step not in self._reference:
      self._reference[step] = self.load(self._reference_dir, step)
    reference = self._reference[step]
    if reference is None or reference.keys() != state.keys():
      return False
    return all(state[k].dtype == reference[k].dtype and state[k].shape == reference[k].shape and
               state[k].tobytes() == reference[k].tobytes() for k in reference)


class Tally:
  def __init__(self):
    self.trials = 0
    self.kills = collections.Counter()  # (phase, signal name) -> count
    self.resumes_ok = 0
    self.wrong_resumes = 0
    self.sigterm_clean = 0
    self.sigterm_sent = 0
    self.mismatches = 0
    self.checkpoints_compared = 0
    self.lost = 0
    self.chains = 0
    self.final_equal = 0
    self.failures: list[str] = []

  def fail(self, message: str) -> None:
    print('    FAIL:', message, flush=True)
    self.failures.append(message)


def check_workdir(reader: CheckpointReader, checkpoint_dir: pathlib.Path, verified: set,
                  tally: Tally) -> dict[int, bool]:
  """Restores every committed step not yet verified and compares it with the reference."""
  restorable = {}
  for step in sorted(committed_steps(checkpoint_dir)):
    state = reader.load(checkpoint_dir, step)
    restorable[step] = state is not None
    if state is None or step in verified:
      continue
    tally.checkpoints_compared += 1
    if reader.equals_reference(state, step):
      verified.add(step)
    else:
      tally.mismatches += 1
      tally.fail(f'checkpoint {step} in {checkpoint_dir} differs from the reference run')
  return restorable


def wait_for_phase(trainer: Trainer, phase: str, checkpoint_dir: pathlib.Path,
                   rng: random.Random, timeout: float = 600) -> str | None:
  """Blocks until `phase` is reached in this run and returns the phase observed at that moment
  (another one if it ended meanwhile), or None if the trainer exited first."""
  deadline = time.time() + timeout
  if phase == 'startup':  # (if start-up was quicker than the delay: a kill during the steps)
    time.sleep(rng.uniform(0.5, 8.0))
    return current_phase(trainer, checkpoint_dir) if trainer.running() else None
  def reached():
    if phase == 'step':
      return len(trainer.find(STEP_LINE)) >= target_steps
    if phase == 'checkpoint write':
      return in_loop(trainer) and save_in_flight(checkpoint_dir)
    return bool(trainer.find(EVAL_START))
  target_steps = rng.randint(1, 6)
  while time.time() < deadline and trainer.running():
    if reached():
      time.sleep({'step': rng.uniform(0.0, 0.3), 'checkpoint write': rng.uniform(0.0, 0.02),
                  'eval': rng.uniform(0.0, 0.1)}[phase])
      return current_phase(trainer, checkpoint_dir) if trainer.running() else None
    time.sleep(0.002 if phase == 'checkpoint write' else 0.01)
  return None


def in_loop(trainer: Trainer) -> bool:
  """The training loop has started: temporary checkpoint directories are this run's saves (a
  killed run's leftovers are removed when the restarted trainer opens its checkpoints)."""
  return bool(trainer.find(STEP_LINE))


def current_phase(trainer: Trainer, checkpoint_dir: pathlib.Path) -> str:
  if not in_loop(trainer):
    return 'startup'
  if save_in_flight(checkpoint_dir):
    return 'checkpoint write'
  if len(trainer.find(EVAL_START)) > len(trainer.find(EVAL_DONE)):
    return 'eval'
  return 'step'


def run_chain(chain: int, args, env: dict, reader: CheckpointReader, tally: Tally,
              rng: random.Random, final_step: int) -> None:
  workdir = pathlib.Path(args.workdir) / f'chain_{chain:02d}'
  shutil.rmtree(workdir, ignore_errors=True)
  workdir.mkdir(parents=True)
  checkpoint_dir = workdir / 'checkpoints'
  command = trainer_command(workdir, pathlib.Path(args.workdir) / 'tfds', args.steps)
  log_path = workdir / 'trainer.log'
  verified: set[int] = set()
  tally.chains += 1
  trainer = Trainer(command, env, log_path)
  expected_resume = None
  while True:
    if expected_resume is not None:  # a restarted trainer: did it resume from the right step?
      while trainer.running() and not trainer.find(RESUMED) and not trainer.find(STEP_LINE):
        time.sleep(0.05)
      resumed = trainer.find(RESUMED)
      actual = resumed[0] if resumed else 0
      if actual == expected_resume:
        tally.resumes_ok += 1
      else:
        tally.wrong_resumes += 1
        tally.fail(f'chain {chain}: resumed from step {actual}, latest complete was {expected_resume}')
      expected_resume = None
    if tally.trials >= args.trials:
      phase = None
    else:
      phase = rng.choice(PHASES)
    if phase is None:
      observed = None
    else:
      observed = wait_for_phase(trainer, phase, checkpoint_dir, rng)
    if observed is None:  # ran to completion (or no more trials wanted): let it finish
      returncode = trainer.wait()
      if returncode != 0 or trainer.find(DONE) != [final_step]:
        tally.fail(f'chain {chain}: trainer exited with status {returncode} without finishing '
                   f'(log: {log_path})')
        return
      check_workdir(reader, checkpoint_dir, verified, tally)
      if final_step in verified:
        tally.final_equal += 1
      else:
        tally.fail(f'chain {chain}: final checkpoint {final_step} missing or different')
      return
    signal_number = signal.SIGKILL if observed == 'startup' or rng.random() < 0.6 else signal.SIGTERM
    before = committed_steps(checkpoint_dir)
    trainer.process.send_signal(signal_number)
    tally.trials += 1
    tally.kills[observed, signal_number.name] += 1
    try:
      returncode = trainer.wait(SIGTERM_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      tally.fail(f'chain {chain}: trainer still running {SIGTERM_EXIT_TIMEOUT_S} s after '
                 f'{signal_number.name}')
      trainer.process.kill()
      returncode = trainer.wait()
    after = committed_steps(checkpoint_dir)
    print(f'  trial {tally.trials:3d}  chain {chain}  {signal_number.name:7s} during '
          f'{observed:16s}  checkpoints before {sorted(before)} after {sorted(after)}', flush=True)
    if signal_number == signal.SIGTERM:
      tally.sigterm_sent += 1
      saved = trainer.find(PREEMPTED) or trainer.find(DONE)
      if returncode == 0 and saved and saved[-1] in after and saved[-1] == max(after):
        tally.sigterm_clean += 1
      else:
        tally.fail(f'chain {chain}: SIGTERM did not lead to a clean save and exit (status '
                   f'{returncode}, saved {saved}, checkpoints {sorted(after)})')
      if trainer.find(DONE) == [final_step]:  # SIGTERM raced the end of the run: chain complete
        check_workdir(reader, checkpoint_dir, verified, tally)
        tally.final_equal += final_step in verified
        return
    restorable = check_workdir(reader, checkpoint_dir, verified, tally)
    good = [s for s, ok in restorable.items() if ok]
    for step in sorted(before):
      # Retention may retire a step once MAX_TO_KEEP newer ones are committed (a SIGTERM'd trainer
      # goes on saving); otherwise a step that was complete before the kill must still restore.
      if step not in good and sum(s > step for s in good) < MAX_TO_KEEP:
        tally.lost += 1
        tally.fail(f'chain {chain}: checkpoint {step}, complete before the kill, is gone or broken')
    expected_resume = max((s for s, ok in restorable.items() if ok), default=0)
    trainer = Trainer(command, env, log_path)


def print_table(tally: Tally, wall_s: float) -> None:
  print()
  print(f'{"fault-injection results":<44s}')
  print(f'{"trials (kill + restart)":<44s}{tally.trials:>6d}')
  for phase in PHASES:
    kills = {name: tally.kills[phase, name] for name in ('SIGKILL', 'SIGTERM')}
    print(f'{"  kills during " + phase:<44s}{sum(kills.values()):>6d}   '
          f'(SIGKILL {kills["SIGKILL"]}, SIGTERM {kills["SIGTERM"]})')
  print(f'{"SIGTERM -> clean save and exit":<44s}{tally.sigterm_clean:>6d} of {tally.sigterm_sent}')
  print(f'{"resumes from the latest complete checkpoint":<44s}{tally.resumes_ok:>6d} of '
        f'{tally.resumes_ok + tally.wrong_resumes}')
  print(f'{"checkpoints compared with the reference":<44s}{tally.checkpoints_compared:>6d}')
  print(f'{"runs completed / final params == reference":<44s}{tally.chains:>6d} / {tally.final_equal}')
  print(f'{"mismatches":<44s}{tally.mismatches + tally.chains - tally.final_equal:>6d}')
  print(f'{"checkpoints lost":<44s}{tally.lost:>6d}')
  print(f'{"wall time":<44s}{wall_s / 60:>6.1f} min')
  if tally.failures:
    print(f'\n{len(tally.failures)} failure(s):')
    for failure in tally.failures:
      print('  ', failure)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=50, help='kill-and-restart trials (default 50).')
  parser.add_argument('--workdir', default='/tmp/effnet_jax_fault_injection',
                      help='scratch directory (reference run, chains, dataset, compilation cache).')
  parser.add_argument('--steps', type=int, default=40, help='train steps per run (default 40).')
  parser.add_argument('--seed', type=int, default=0, help='seed of the kill schedule.')
  args = parser.parse_args(argv)
  start = time.time()
  root = pathlib.Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device, as a user has
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             JAX_COMPILATION_CACHE_DIR=str(root / 'jit_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')])))
  os.environ.update(JAX_PLATFORMS='cpu')  # for the checkpoint reader in this process

  reference_dir = root / 'reference'
  final_step = args.steps
  if not (reference_dir / 'checkpoints' / str(final_step)).is_dir():
    shutil.rmtree(reference_dir, ignore_errors=True)
    reference_dir.mkdir(parents=True)
    print(f'Reference run ({args.steps} steps, every checkpoint kept) in {reference_dir} ...', flush=True)
    # A checkpoint at every step: a SIGTERM'd run saves wherever it stopped.
    reference = Trainer(trainer_command(reference_dir, root / 'tfds', args.steps, max_to_keep=1000,
                                        checkpoint_every=1), env, reference_dir / 'trainer.log')
    if reference.wait() != 0:
      print(f'The reference run failed; see {reference_dir / "trainer.log"}.')
      return 1
  reader = CheckpointReader(reference_dir / 'checkpoints')

  rng = random.Random(args.seed)
  tally = Tally()
  chain = 0
  while tally.trials < args.trials:
    print(f'Chain {chain}:', flush=True)
    run_chain(chain, args, env, reader, tally, rng, final_step)
    chain += 1
  print_table(tally, time.time() - start)
  return 1 if tally.failures else 0


if __name__ == '__main__':
  sys.exit(main())
