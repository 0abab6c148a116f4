"""sharding.py on the 8 simulated CPU devices that tests/conftest.py sets up."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from effnet_jax import sharding


@pytest.fixture(scope='module')
def mesh():
    return sharding.create_mesh()


def test_mesh_has_one_data_axis_over_all_devices(mesh):
    assert jax.device_count() == 8
    assert mesh.axis_names == ('data',)
    assert mesh.shape['data'] == 8
    assert sharding.replicated_sharding(mesh).spec == P()
    assert sharding.batch_sharding(mesh).spec == P('data')
    assert sharding.create_mesh(jax.devices()[:2]).size == 2


def test_make_global_batch_shards_the_batch_dimension(mesh):
    local_batch = {'image': np.arange(16 * 4 * 4 * 3, dtype=np.float32).reshape(16, 4, 4, 3),
                   'label': np.arange(16, dtype=np.int32)}
    batch = sharding.make_global_batch(local_batch, mesh)
    assert batch['image'].shape == (16, 4, 4, 3)
    assert batch['image'].sharding.spec == P('data')
    shards = batch['label'].addressable_shards
    assert len(shards) == 8 and all(shard.data.shape == (2,) for shard in shards)
    np.testing.assert_array_equal(np.asarray(batch['label']), local_batch['label'])


def test_jit_with_replicated_state_and_sharded_batch(mesh):
    state = sharding.replicate({'w': jnp.ones((3,))}, mesh)
    assert state['w'].sharding.is_fully_replicated
    batch = sharding.make_global_batch({'x': np.ones((8, 3), np.float32)}, mesh)
    loss = jax.jit(lambda s, b: jnp.mean(b['x'] @ s['w']),
                   out_shardings=sharding.replicated_sharding(mesh))(state, batch)
    assert float(loss) == 3.0


def test_check_batch_size(mesh):
    assert sharding.check_batch_size(2048, mesh) == 256
    with pytest.raises(ValueError, match=r'number of devices \(8\).*96 or 104'):
        sharding.check_batch_size(100, mesh)
    with pytest.raises(ValueError, match='8'):
        sharding.check_batch_size(0, mesh)
    assert sharding.per_host_batch_size(64) == 64  # one process


@pytest.mark.parametrize('num_devices, expected', [
    (1, 1), (8, 1), (16, 8), (32, 8), (64, 8), (128, 16), (256, 32), (1024, 128)])
def test_reference_bn_group_size(num_devices, expected):
    """reference-spec.md §2.9: S <= 8 per device; S > 8 groups of max(8, S // 8)."""
    assert sharding.bn_group_size('reference', num_devices) == expected


def test_other_bn_group_modes():
    assert sharding.bn_group_size('global', 32) == 32
    assert sharding.bn_group_size('per_device', 32) == 1
    assert sharding.bn_group_size(4, 32) == 4
    assert sharding.bn_group_size('16', 32) == 16
    with pytest.raises(ValueError, match=r'must divide the number of devices \(32\)'):
        sharding.bn_group_size(3, 32)
    with pytest.raises(ValueError, match='Unknown bn_group'):
        sharding.bn_group_size('sync', 32)


def test_axis_index_groups():
    assert sharding.axis_index_groups(4, 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sharding.axis_index_groups(1, 2) == [[0], [1]]
    assert sharding.axis_index_groups(8, 8) is None
    with pytest.raises(ValueError, match='divide'):
        sharding.axis_index_groups(3, 8)


def test_distributed_is_not_started_off_tpu(monkeypatch):
    monkeypatch.setattr(sharding, '_on_cloud_tpu', lambda: False)
    config = ml_collections.ConfigDict(sharding.CONFIG_DEFAULTS)
    assert sharding.maybe_initialize_distributed(config) is False
    config.distributed = 'off'
    assert sharding.maybe_initialize_distributed(config) is False
    config.distributed = 'yes'
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        sharding.maybe_initialize_distributed(config)


def test_distributed_passes_explicit_fields(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
    config = ml_collections.ConfigDict(sharding.CONFIG_DEFAULTS)
    config.coordinator_address, config.num_processes, config.process_id = '10.0.0.1:1234', 4, 2
    config.heartbeat_timeout_seconds = 30
    assert sharding.maybe_initialize_distributed(config) is True
    assert calls == [dict(coordinator_address='10.0.0.1:1234', num_processes=4, process_id=2,
                          heartbeat_timeout_seconds=30, shutdown_timeout_seconds=300)]
