"""checkpoint.py: round trip onto the mesh, retention, model check, damage and kill -9 recovery,
failed saves, SIGTERM."""
import logging
import os
import pathlib
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from effnet_jax import checkpoint, sharding

METADATA = {'model_name': 'efficientnet-b0', 'image_size': 224}


@pytest.fixture(scope='module')
def mesh():
    return sharding.create_mesh()


def make_state(mesh, scale=1.0):
    params = {'conv': {'kernel': jnp.full((3, 3, 3, 8), scale)}, 'bn': {'scale': jnp.ones(8)}}
    state = train_state.TrainState.create(apply_fn=None, params=params,
                                          tx=optax.rmsprop(0.1, initial_scale=1.0, momentum=0.9))
    return sharding.replicate(state, mesh)


def test_round_trip_onto_the_mesh(tmp_path, mesh):
    state = make_state(mesh, scale=2.0)
    state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, state.params))
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        assert checkpointer.restore_latest(state) is None
        assert checkpointer.save(1, state, METADATA, data_position=12345)
        assert not checkpointer.save(1, state, METADATA, data_position=12345, force=True)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            make_state(mesh))
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        restored = checkpointer.restore_latest(abstract, model_name='efficientnet-b0', image_size=224)
    assert restored.step == 1
    assert restored.metadata == dict(METADATA, step=1, data_position=12345)
    assert isinstance(restored.state, train_state.TrainState)
    assert int(restored.state.step) == 1
    for original, loaded in zip(jax.tree.leaves(state), jax.tree.leaves(restored.state)):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(loaded))
        assert loaded.sharding.is_equivalent_to(sharding.replicated_sharding(mesh), loaded.ndim)


def test_keeps_latest_k_and_the_best(tmp_path, mesh):
    state = make_state(mesh)
    top1_by_step = {1: 0.50, 2: 0.90, 3: None, 4: 0.60, 5: None, 6: 0.70}
    with checkpoint.Checkpointer(str(tmp_path), max_to_keep=2) as checkpointer:
        for step, top1 in top1_by_step.items():
            metrics = None if top1 is None else {'eval_top1': top1, 'eval_loss': jnp.float32(1.0)}
            checkpointer.save(step, state, METADATA, data_position=step, metrics=metrics)
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [2, 5, 6]
        assert checkpointer.best_step() == 2
        assert checkpointer.latest_step() == 6
        assert checkpointer.reached_preemption(6) is False  # no preemption service on CPU


def test_refuses_a_workdir_of_another_model(tmp_path, mesh):
    state = make_state(mesh)
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        checkpointer.save(1, state, METADATA, data_position=0)
        checkpointer.wait_until_finished()
        with pytest.raises(ValueError, match=r"'efficientnet-b0'.*'efficientnet-b3'.*--workdir"):
            checkpointer.restore_latest(state, model_name='efficientnet-b3')
        with pytest.raises(ValueError, match='image size 224'):
            checkpointer.restore_latest(state, model_name='efficientnet-b0', image_size=240)
        checkpointer.save(2, state, dict(METADATA, scan_blocks=False), data_position=0)
        checkpointer.wait_until_finished()
        with pytest.raises(ValueError, match=r'config.scan_blocks=False \(this run: True\).*--workdir'):
            checkpointer.restore_latest(state, model_name='efficientnet-b0', scan_blocks=True)
        assert checkpointer.restore_latest(state, model_name='efficientnet-b0', scan_blocks=False).step == 2
        with pytest.raises(ValueError, match='model_name'):
            checkpointer.save(2, state, {'image_size': 224}, data_position=0)


def test_falls_back_from_a_damaged_latest_step(tmp_path, mesh, caplog):
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, make_state(mesh, scale=step), METADATA, data_position=step)
    for data_file in (tmp_path / '3' / 'state' / 'd').iterdir():  # truncate the array data
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])

    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        with caplog.at_level(logging.WARNING):
            restored = checkpointer.restore_latest(make_state(mesh), model_name='efficientnet-b0')
        assert restored.step == 2 and restored.metadata['data_position'] == 2
        np.testing.assert_array_equal(np.asarray(restored.state.params['conv']['kernel']), 2.0)
        assert any('step 3' in record.getMessage() for record in caplog.records)
        assert (tmp_path / 'corrupted' / '3').is_dir()
        assert checkpointer.all_steps() == [1, 2]
        assert checkpointer.save(3, restored.state, METADATA, data_position=3)  # step 3 is free again


def test_mismatched_state_raises_and_moves_nothing(tmp_path, mesh):
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, {'w': jnp.ones(4)}, METADATA, data_position=step)
        checkpointer.wait_until_finished()
        with pytest.raises(Exception):
            checkpointer.restore_latest({'w': jax.ShapeDtypeStruct((5,), jnp.float32), 'v': jnp.ones(2)})
        assert checkpointer.all_steps() == [1, 2]
    assert not (tmp_path / 'corrupted').exists()


SAVE_FOREVER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from effnet_jax import checkpoint
    checkpointer = checkpoint.Checkpointer(sys.argv[1], max_to_keep=2)
    start = (checkpointer.latest_step() or 0) + 1
    for step in range(start, start + 100_000):
      state = {'weights': jnp.full((2048, 1024), float(step)), 'step': jnp.int32(step)}  # 8 MiB
      checkpointer.save(step, state, {'model_name': 'toy'}, data_position=step)
      if step == start:
        checkpointer.wait_until_finished()
        print('committed', flush=True)
""")


def test_kill_9_during_async_saves_leaves_a_restorable_workdir(tmp_path, mesh):
    workdir = tmp_path / 'workdir'
    script = tmp_path / 'save_forever.py'
    script.write_text(SAVE_FOREVER)
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
    rng = random.Random(0)
    abstract = {'weights': jax.ShapeDtypeStruct((2048, 1024), jnp.float32,
                                                sharding=sharding.replicated_sharding(mesh)),
                'step': jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated_sharding(mesh))}
    previous_step = 0
    for _ in range(2):
        process = subprocess.Popen([sys.executable, str(script), str(workdir)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process.stdout.readline().strip() == 'committed'
        time.sleep(rng.uniform(0.3, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        with checkpoint.Checkpointer(str(workdir)) as checkpointer:
            restored = checkpointer.restore_latest(abstract, model_name='toy')
        assert restored.step > previous_step
        assert int(restored.state['step']) == restored.step
        np.testing.assert_array_equal(np.asarray(restored.state['weights']), float(restored.step))
        previous_step = restored.step
    assert not list(pathlib.Path(workdir).glob('*tmp*'))  # leftovers cleaned on the last open


def random_state(mesh, seed):
    """Incompressible arrays (a constant array compresses to a few bytes on disk)."""
    weights = np.random.default_rng(seed).normal(size=(256, 256)).astype(np.float32)  # 256 KiB
    return sharding.replicate({'weights': weights, 'step': np.int32(seed)}, mesh)


def damage(step_dir: pathlib.Path, how: str) -> None:
    """Damages a committed checkpoint the ways storage does: lost or short files, flipped bits."""
    array_files = sorted((step_dir / 'state').glob('ocdbt.process_*/d/*'), key=lambda p: p.stat().st_size)
    if how == 'flipped bit':  # in the biggest file: the weights' bytes
        data = bytearray(array_files[-1].read_bytes())
        data[len(data) // 2] ^= 0x04
        array_files[-1].write_bytes(bytes(data))
    elif how == 'truncated':
        for path in array_files:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == 'zeroed':
        for path in array_files:
            path.write_bytes(bytes(path.stat().st_size))
    elif how == 'files lost':
        for path in (step_dir / 'state').rglob('manifest.ocdbt'):
            path.unlink()
    elif how == 'metadata garbled':
        for path in (step_dir / 'metadata').rglob('metadata'):
            path.write_text('{"model_name": "toy", "st')
    elif how == 'emptied':
        for path in step_dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize('how', ['flipped bit', 'truncated', 'zeroed', 'files lost', 'metadata garbled',
                                 'emptied'])
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, mesh, caplog, how):
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, random_state(mesh, step), {'model_name': 'toy'}, data_position=step)
    damage(tmp_path / '2', how)
    with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
        with caplog.at_level(logging.WARNING):
            restored = checkpointer.restore_latest(random_state(mesh, 0), model_name='toy')
        assert restored.step == 1
        np.testing.assert_array_equal(np.asarray(restored.state['weights']),
                                      np.asarray(random_state(mesh, 1)['weights']))
        assert any('step 2' in r.getMessage() and 'failed to restore' in r.getMessage()
                   for r in caplog.records)
        assert checkpointer.all_steps() == [1]
    assert (tmp_path / 'corrupted' / '2').is_dir()


def test_a_failed_save_raises_naming_the_step_and_keeps_the_previous_checkpoints(tmp_path, mesh):
    """An I/O error while writing (here: the file-size limit, EFBIG; a full disk gives ENOSPC the
    same way) fails that save loudly; the earlier checkpoints stay restorable."""
    checkpointer = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2):
        checkpointer.save(step, random_state(mesh, step), {'model_name': 'toy'}, data_position=step)
    checkpointer.wait_until_finished()
    state = random_state(mesh, 3)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(checkpoint.CheckpointSaveError) as error:
            checkpointer.save(3, state, {'model_name': 'toy'}, data_position=3)
            checkpointer.wait_until_finished()  # an async save reports here (or at the next save)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    message = str(error.value)
    assert 'checkpoint of step 3' in message and 'File too large' in message
    assert 'earlier checkpoints (steps [1, 2]) are intact' in message and 'resume from step 2' in message
    checkpointer.close()  # the failure was reported once; closing does not raise it again
    with checkpoint.Checkpointer(str(tmp_path), max_to_keep=2) as checkpointer:
        assert checkpointer.all_steps() == [1, 2]
        restored = checkpointer.restore_latest(random_state(mesh, 0), model_name='toy')
        assert restored.step == 2 and int(restored.state['step']) == 2
        assert checkpointer.save(3, state, {'model_name': 'toy'}, data_position=3)  # space is back


def test_sigterm_requests_a_preemption_save_instead_of_killing(tmp_path):
    checkpointer = checkpoint.Checkpointer(str(tmp_path))
    assert checkpointer.treat_sigterm_as_preemption()
    assert not checkpointer.reached_preemption(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert checkpointer.reached_preemption(2)
    default_handler = signal.getsignal(signal.SIGTERM)
    checkpointer.close()
    assert signal.getsignal(signal.SIGTERM) is not default_handler  # the previous handler is back
