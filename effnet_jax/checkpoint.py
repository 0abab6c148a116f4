"""Checkpoints: save, resume, keep-best and preemption, over Orbax's CheckpointManager.

This is the one place that knows Orbax (design.md), so an Orbax API change touches only this file.

Layout of a step directory written by `Checkpointer.save` (Orbax items):
  <directory>/<step>/state/      the train-state pytree (params, batch_stats, opt state, EMA, step...)
  <directory>/<step>/metadata/   JSON: the caller's metadata (must contain 'model_name'; may contain
                                 'image_size') plus 'step' and 'data_position'
  <directory>/<step>/metrics/    JSON, only when `metrics` has 'eval_top1' (used to keep the best)

Why it is safe to kill at any time: Orbax writes each step into a temporary directory and renames it
(or, on GCS, writes a commit marker) only once every item is complete, so a half-written step is
never listed; leftover temporary directories are removed when a Checkpointer is next created. A
step that was committed but later damaged (truncated file, lost object, flipped bits) fails to
restore, or restores with values whose CRC-32 differs from the one saved in its metadata (Orbax and
TensorStore do not checksum array data, so without this a flipped bit would load silently); then
`restore_latest` falls back to the newest step that restores and moves the damaged ones aside to
<directory>/corrupted/ so that training can save those step numbers again.

A save that fails (disk full, I/O error, lost permissions) raises `CheckpointSaveError` naming the
step, from `save` or from the next `save`/`wait_until_finished`/`close` when it was asynchronous. The
failed step is never committed and the earlier checkpoints are left as they were.

SIGTERM: after `treat_sigterm_as_preemption()` in a single-process job, SIGTERM (what Cloud TPU,
GKE and most schedulers send before a preemption) only sets a flag that `reached_preemption`
reports, so the trainer saves and exits cleanly at the end of the current step. Multi-process jobs get the same
from JAX's preemption service, which agrees on one step for all hosts (a per-host flag could not).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import zlib
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'eval_top1'
CORRUPTED_SUBDIR = 'corrupted'
CHECKSUM_KEY = 'state_crc32'  # metadata entry: {tree path: [dtype name, CRC-32 of the bytes]}

CONFIG_DEFAULTS = dict(
    checkpoint_max_to_keep=3,   # newest checkpoints kept (plus the best by eval_top1)
    checkpoint_keep_best=True,  # also keep the checkpoint with the highest eval_top1
    checkpoint_async=True,      # write checkpoints in a background thread
)


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed; that step was not committed and earlier checkpoints are intact."""


class CheckpointCorruptedError(ValueError):
    """A checkpoint restored, but its arrays do not match the checksums saved with it."""


class Restored(NamedTuple):
    state: Any
    step: int
    metadata: dict  # includes 'data_position' and 'step'


def check_compatible(metadata: dict, model_name: str, image_size: int | None = None,
                     scan_blocks: bool | None = None) -> None:
    """Raises ValueError if a checkpoint's metadata belongs to another model, resolution or block layout.

    Resuming e.g. a b3 run from a b0 workdir would otherwise fail deep inside Orbax with a shape
    mismatch, or, worse, silently succeed when shapes agree. `scan_blocks` (config.scan_blocks) stacks
    a stage's repeated blocks into one set of parameters: the same network in another tree.
    """
    saved_model = metadata.get('model_name')
    saved_size = metadata.get('image_size')
    saved_scan = metadata.get('scan_blocks')
    problems = []
    if saved_model != model_name:
        problems.append(f'model {saved_model!r} (this run: {model_name!r})')
    if image_size is not None and saved_size is not None and int(saved_size) != int(image_size):
        problems.append(f'image size {saved_size} (this run: {image_size})')
    if scan_blocks is not None and saved_scan is not None and bool(saved_scan) != bool(scan_blocks):
        problems.append(f'config.scan_blocks={bool(saved_scan)} (this run: {bool(scan_blocks)})')
    if problems:
        raise ValueError(
            f'The workdir holds a checkpoint (step {metadata.get("step")}) of {" and ".join(problems)}. '
            'Use a new --workdir for this run, or pass the matching config to resume that one.')


def _abstract(tree):
    """Concrete jax.Arrays -> ShapeDtypeStructs keeping their sharding (the restore target)."""
    def to_abstract(leaf):
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        return leaf
    return jax.tree.map(to_abstract, tree)


def state_checksums(state) -> dict[str, list] | None:
    """[dtype name, CRC-32] of each array of `state` (as this host holds it), keyed by tree path.

    None when some array is not fully replicated: then no host holds all of it, and the check is
    skipped (the trainer's state is replicated). Costs one host copy of the state per save.
    """
    checksums = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if isinstance(leaf, jax.Array):
            if not leaf.is_fully_replicated:
                return None
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(np.asarray(leaf))
        checksums[jax.tree_util.keystr(path)] = [array.dtype.name,
                                                 zlib.crc32(array.reshape(-1).view(np.uint8))]
    return checksums


def _verify_checksums(step: int, state, expected: dict[str, list] | None) -> None:
    """Raises CheckpointCorruptedError if a restored array differs from its saved checksum.

    Arrays restored into another dtype than they were saved in (a restore target may ask Orbax to
    cast) cannot be compared and are skipped.
    """
    actual = state_checksums(state) if expected is not None else None
    if actual is None:  # saved without checksums (older checkpoint, sharded state)
        return
    damaged = sorted(set(expected) ^ set(actual) | {
        path for path, (dtype, crc) in expected.items()
        if path in actual and actual[path][0] == dtype and actual[path][1] != crc})
    if damaged:
        raise CheckpointCorruptedError(
            f'Checkpoint at step {step}: {len(damaged)} array(s) differ from the checksums saved with '
            f'them (e.g. {", ".join(damaged[:3])}); its files were damaged after it was written.')


def _json_metrics(metrics: dict | None) -> dict | None:
    """Metrics Orbax should record for keep-best: only when eval_top1 is present, as floats."""
    if not metrics or BEST_METRIC not in metrics:
        return None
    return {name: float(np.asarray(value)) for name, value in metrics.items()}


class Checkpointer:
    """Keeps the newest `max_to_keep` checkpoints plus the best by eval_top1 in `directory`.

    Every process must call every method (Orbax coordinates hosts inside save/restore).
    """

    def __init__(self, directory: str, max_to_keep: int | None = 3, keep_best: bool = True,
                 async_save: bool = True):
        self.directory = directory if '://' in directory else os.path.abspath(directory)
        policies = [checkpoint_managers.LatestN(n=max_to_keep)]
        best_fn = None
        if keep_best:
            best_fn = lambda metrics: metrics[BEST_METRIC]  # noqa: E731
            policies.append(checkpoint_managers.BestN(get_metric_fn=best_fn, n=1,
                                                      keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,  # also makes Orbax write the metrics item and answer best_step()
            best_mode='max',
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._step_in_flight: int | None = None  # an asynchronous save not yet known to be complete
        self._save_failed = False
        self._sigterm_received = False
        self._previous_sigterm_handler = None

    # ---- queries

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def read_metadata(self, step: int | None = None) -> dict | None:
        """The JSON metadata of `step` (default: latest), or None when there is no checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        metadata = dict(restored['metadata'])
        metadata.pop(CHECKSUM_KEY, None)
        return metadata

    # ---- save

    def save(self, step: int, state, metadata: dict, data_position: int,
             metrics: dict | None = None, force: bool = False) -> bool:
        """Starts saving `state` at `step` (asynchronously by default); returns False if skipped.

        Args:
          state: any pytree of arrays, e.g. a flax TrainState (arrays are copied to host before this
            returns, so the caller may donate them to the next step).
          metadata: JSON-serialisable dict; must contain 'model_name' (see `check_compatible`).
          data_position: how far the input pipeline has advanced (e.g. batches consumed), restored
            as metadata['data_position'] so that a resumed run does not repeat data.
          metrics: optional eval metrics; with 'eval_top1' they decide which checkpoint is best.
          force: save even if Orbax's save policy would skip this step.
        """
        if 'model_name' not in metadata:
            raise ValueError("Checkpoint metadata needs a 'model_name' entry (see check_compatible).")
        self.wait_until_finished()  # Orbax waits for the previous save anyway; this names its errors.
        if step in self._manager.all_steps():
            return False  # e.g. the final save right after a periodic save of the same step
        metadata = dict(metadata, step=int(step), data_position=int(data_position),
                        **{CHECKSUM_KEY: state_checksums(state)})
        items = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                   metadata=ocp.args.JsonSave(metadata))
        try:
            saved = self._manager.save(step, args=items, metrics=_json_metrics(metrics), force=force)
        except Exception as error:  # OSError, or ValueError/RuntimeError from TensorStore
            raise self._save_error(step, error) from error
        if saved:
            self._step_in_flight = int(step)
        return saved

    def _save_error(self, step: int, error: Exception) -> CheckpointSaveError:
        self._save_failed = True
        self._step_in_flight = None
        try:
            # Orbax forgets the steps a save would retire when it starts, but deletes their files
            # only after that save commits: re-read the directory to list what is really there.
            self._manager.reload()
            kept = sorted(set(self._manager.all_steps()) - {step})
        except Exception:  # the storage may be unreadable too
            kept = []
        resume = f'resume from step {kept[-1]}' if kept else 'start from step 0 (no earlier checkpoint)'
        what = 'a checkpoint' if step is None else f'the checkpoint of step {step}'
        return CheckpointSaveError(
            f'Saving {what} to {self.directory} failed: {type(error).__name__}: '
            f'{error}\nThat step was not committed; the earlier checkpoints (steps {kept}) are intact. '
            f'Free disk space or fix the storage, then rerun the same command to {resume}.')

    # ---- restore

    def restore(self, step: int, abstract_state) -> Restored:
        """Restores one step; arrays land with the shardings of `abstract_state`'s leaves.

        Raises CheckpointCorruptedError if the arrays do not match the checksums saved with them.

        Args:
          abstract_state: pytree like the saved state whose leaves are jax.ShapeDtypeStruct with a
            sharding (e.g. from jax.eval_shape plus replicated shardings), or concrete arrays.
        """
        items = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(abstract_state)),
                                   metadata=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=items)
        metadata = dict(restored['metadata'])
        _verify_checksums(step, restored['state'], metadata.pop(CHECKSUM_KEY, None))
        return Restored(restored['state'], int(step), metadata)

    def restore_latest(self, abstract_state, model_name: str | None = None,
                       image_size: int | None = None, scan_blocks: bool | None = None) -> Restored | None:
        """Restores the newest good checkpoint, or returns None when there is none.

        With `model_name` the latest checkpoint's metadata is checked first (`check_compatible`).
        A step that fails to restore while an older one succeeds is damaged: a warning names it and
        it is moved to <directory>/corrupted/. If every step fails the latest error is raised
        unchanged (most likely `abstract_state` does not match, not damage), and nothing is moved.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        newest_metadata = self._newest_readable_metadata(steps) if model_name is not None else None
        if newest_metadata is not None:
            check_compatible(newest_metadata, model_name, image_size, scan_blocks)
        bad_steps, first_error = [], None
        for step in steps:
            try:
                restored = self.restore(step, abstract_state)
            except Exception as error:  # Orbax/TensorStore raise many types for damaged files.
                logging.warning('Checkpoint at step %d in %s failed to restore (%s: %s); trying an older '
                                'one.', step, self.directory, type(error).__name__, error)
                bad_steps.append(step)
                first_error = first_error or error
                continue
            if bad_steps:
                self._quarantine(bad_steps)
                logging.warning('Resumed from step %d; damaged checkpoint(s) at step(s) %s moved to %s.',
                                step, bad_steps, os.path.join(self.directory, CORRUPTED_SUBDIR))
            return restored
        raise first_error

    def _newest_readable_metadata(self, steps: list[int]) -> dict | None:
        for step in steps:
            try:
                return self.read_metadata(step)
            except Exception:  # damaged; restore_latest will report it
                continue
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Moves damaged step directories out of Orbax's sight (primary process only)."""
        if jax.process_index() == 0:
            from etils import epath  # Orbax's path library; handles local and gs:// paths.
            corrupted = epath.Path(self.directory) / CORRUPTED_SUBDIR
            corrupted.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = corrupted / str(step)
                if target.exists():
                    target.rmtree()
                (epath.Path(self.directory) / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices('effnet_jax_checkpoint_quarantine')
        self._manager.reload()

    # ---- preemption and lifetime

    def reached_preemption(self, step: int) -> bool:
        """True when a preemption notice was received and all hosts reached this step: save now.

        Needs jax.distributed to be initialised (sharding.maybe_initialize_distributed), as it is on
        Cloud TPU; elsewhere always False, except after SIGTERM once `treat_sigterm_as_preemption`
        was called.
        """
        return self._sigterm_received or bool(self._manager.reached_preemption(step))

    def treat_sigterm_as_preemption(self) -> bool:
        """From now until `close`, SIGTERM makes `reached_preemption` True instead of killing us.

        Only in single-process jobs run from the main thread (Python's rule for signal handlers);
        with several processes JAX's preemption service does this for all hosts at once. Returns
        True if the handler was installed.
        """
        if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
            return False
        if self._previous_sigterm_handler is None:
            self._previous_sigterm_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def _on_sigterm(self, signum, frame):
        logging.warning('SIGTERM received: the trainer will save a checkpoint after this step and exit.')
        self._sigterm_received = True

    def wait_until_finished(self) -> None:
        """Blocks until the pending save is committed; raises CheckpointSaveError if it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            raise self._save_error(self._step_in_flight, error) from error
        self._step_in_flight = None

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads (and the SIGTERM handler).

        Raises CheckpointSaveError if the pending save failed, unless a save error was already raised.
        """
        if self._previous_sigterm_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm_handler)
            self._previous_sigterm_handler = None
        already_reported = self._save_failed
        try:
            self.wait_until_finished()
        except CheckpointSaveError:
            if not already_reported:
                raise
        finally:
            self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
