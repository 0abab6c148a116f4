"""tensorflow/tpu reference checkpoints -> effnet_jax.

The test writes a real TF checkpoint (``tf.raw_ops.SaveV2``, which keeps names exactly) with the
reference's variable names (reference-spec §1.14), random values, EMA shadows, optimizer slots and a
global step, as a training run of the reference code leaves them.
"""
import jax
import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from effnet_jax.convert import ConversionError, core, tf_checkpoint  # noqa: E402
from effnet_jax.models import create_model  # noqa: E402

SCOPE = 'efficientnet-b0'
BN = {'scale': 'gamma', 'bias': 'beta', 'mean': 'moving_mean', 'var': 'moving_variance'}


def reference_name(path, expands):
    """The reference's name of one of our variables, spelled out by hand for the test."""
    _, *modules, variable = path
    top = {'stem_conv': 'stem/conv2d', 'stem_bn': 'stem/tpu_batch_normalization', 'head_conv': 'head/conv2d',
           'head_bn': 'head/tpu_batch_normalization', 'classifier': 'head/dense'}
    if modules[0] in top:
        layer = top[modules[0]]
    else:
        inner = '/'.join(modules[1:])
        if expands[modules[0]]:
            table = {'expand_conv': 'conv2d', 'bn0': 'tpu_batch_normalization', 'depthwise_conv': 'depthwise_conv2d',
                     'bn1': 'tpu_batch_normalization_1', 'se/reduce': 'se/conv2d', 'se/expand': 'se/conv2d_1',
                     'project_conv': 'conv2d_1', 'bn2': 'tpu_batch_normalization_2'}
        else:
            table = {'depthwise_conv': 'depthwise_conv2d', 'bn1': 'tpu_batch_normalization',
                     'se/reduce': 'se/conv2d', 'se/expand': 'se/conv2d_1', 'project_conv': 'conv2d',
                     'bn2': 'tpu_batch_normalization_1'}
        layer = f'{modules[0]}/{table[inner]}'
    if modules[-1] in ('stem_bn', 'head_bn', 'bn0', 'bn1', 'bn2'):
        variable = BN[variable]
    elif modules[-1] == 'depthwise_conv':
        variable = 'depthwise_kernel'
    return f'{SCOPE}/{layer}/{variable}'


@pytest.fixture(scope='module')
def reference_checkpoint(tmp_path_factory):
    """(checkpoint prefix, {our path: raw value}, {our path: EMA value}) for a random B0."""
    model = create_model('efficientnet-b0')
    expands = {f'blocks_{i}': spec.expand_ratio != 1 for i, spec in enumerate(model.blocks)}
    rng = np.random.default_rng(1)
    names, values, raw, ema = [], [], {}, {}
    for path, shape in core.variable_shapes(model).items():
        ours = rng.normal(size=shape.shape).astype(np.float32)
        if path[-1] == 'var':
            ours = np.abs(ours) + 0.5
        shadow = (ours * 0.5 + 0.25).astype(np.float32)
        raw[path], ema[path] = ours, shadow
        stored = np.transpose(ours, (0, 1, 3, 2)) if path[-2] == 'depthwise_conv' else ours  # TF (k, k, C, 1)
        stored_shadow = np.transpose(shadow, (0, 1, 3, 2)) if path[-2] == 'depthwise_conv' else shadow
        name = reference_name(path, expands)
        names += [name, name + '/ExponentialMovingAverage']
        values += [stored, stored_shadow]
        if path[0] == 'params':  # optimizer slots exist for trainable variables only
            names += [name + '/RMSProp', name + '/RMSProp_1']
            values += [np.zeros_like(stored), np.zeros_like(stored)]
    names.append('global_step')
    values.append(np.array(1234, np.int64))
    prefix = str(tmp_path_factory.mktemp('tf_ckpt') / 'model.ckpt-1234')
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                      tensors=[tf.constant(v) for v in values])
    return prefix, raw, ema


def test_checkpoint_is_what_the_reference_writes(reference_checkpoint):
    prefix, _, _ = reference_checkpoint
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    assert shapes['efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel'] == [3, 3, 32, 1]
    assert shapes['efficientnet-b0/blocks_0/conv2d/kernel'] == [1, 1, 32, 16]  # project: no expansion
    assert shapes['efficientnet-b0/blocks_1/conv2d/kernel'] == [1, 1, 16, 96]  # expansion
    assert shapes['efficientnet-b0/head/dense/kernel'] == [1280, 1000]


@pytest.mark.parametrize('ema', [False, True])
def test_values_land_where_they_should(reference_checkpoint, ema):
    prefix, raw, shadows = reference_checkpoint
    expected = shadows if ema else raw
    _, variables, report = tf_checkpoint.convert_checkpoint(prefix, 'efficientnet-b0', ema=ema)
    assert report.ok and len(report.loaded) == len(expected)
    flat = core.traverse_util.flatten_dict(variables)
    for path, value in expected.items():
        np.testing.assert_array_equal(flat[path], value, err_msg='/'.join(path))
    reader = tf.train.load_checkpoint(prefix)
    suffix = '/ExponentialMovingAverage' if ema else ''
    np.testing.assert_array_equal(
        variables['params']['blocks_5']['depthwise_conv']['kernel'],
        reader.get_tensor(f'efficientnet-b0/blocks_5/depthwise_conv2d/depthwise_kernel{suffix}').transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(variables['params']['blocks_0']['project_conv']['kernel'],
                                  reader.get_tensor(f'efficientnet-b0/blocks_0/conv2d/kernel{suffix}'))
    np.testing.assert_array_equal(variables['batch_stats']['blocks_15']['bn2']['var'],
                                  reader.get_tensor(f'efficientnet-b0/blocks_15/tpu_batch_normalization_2/'
                                                    f'moving_variance{suffix}'))
    np.testing.assert_array_equal(variables['params']['classifier']['kernel'],
                                  reader.get_tensor(f'efficientnet-b0/head/dense/kernel{suffix}'))


def test_logits_match_our_model_on_the_same_values(reference_checkpoint):
    prefix, raw, _ = reference_checkpoint
    model, variables, _ = tf_checkpoint.convert_checkpoint(prefix, 'efficientnet-b0')
    direct = core.traverse_util.unflatten_dict(raw)
    images = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(np.asarray(apply(variables, images)), np.asarray(apply(direct, images)))


def test_wrong_model_lists_offending_tensors(reference_checkpoint):
    prefix, _, _ = reference_checkpoint
    with pytest.raises(ConversionError) as error:
        tf_checkpoint.convert_checkpoint(prefix, 'efficientnet-b2')
    message = str(error.value)
    wrong_shape = 'efficientnet-b0/blocks_1/depthwise_conv2d/depthwise_kernel: shape (3, 3, 96, 1)'
    assert wrong_shape in message
    assert 'efficientnet-b0/blocks_1/depthwise_conv2d/depthwise_kernel (3, 3, 96, 1)' not in message  # not twice
    assert 'another model variant' in message


def test_directory_and_missing_checkpoint(tmp_path, reference_checkpoint):
    with pytest.raises(FileNotFoundError, match='No TF checkpoint'):
        tf_checkpoint.read_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='Cannot read a TF checkpoint'):
        tf_checkpoint.read_checkpoint(str(tmp_path / 'nothing.ckpt'))
