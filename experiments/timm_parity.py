"""timm ``tf_efficientnet_b0`` (random init) vs effnet_jax after conversion: max |logit difference|.

Not part of CI (needs timm). Run with timm importable, e.g.
  pip install --target /tmp/timmpkgs --no-deps timm==1.0.29 torchvision==0.28.0 && \
  pip install --target /tmp/timmpkgs huggingface_hub safetensors pyyaml
  PYTHONPATH=/tmp/timmpkgs python experiments/timm_parity.py [--model tf_efficientnet_b0] [--size 224]
With the CPU torch wheel, torchvision's compiled ops do not load (its PyPI wheel is built against CUDA
torch); ``--stub-torchvision`` replaces torchvision with an empty module, which is enough to build
timm's EfficientNets (they do not use torchvision). Expected: max abs diff ~1e-5 or below.
"""
import argparse
import enum
import sys
import types

import numpy as np

TIMM_TO_OURS = {f'tf_efficientnet_b{i}': f'efficientnet-b{i}' for i in range(8)}
TIMM_TO_OURS.update({f'tf_efficientnet_lite{i}': f'efficientnet-lite{i}' for i in range(5)})


def _placeholder_attribute(attr):
    if attr.startswith('__'):
        raise AttributeError(attr)
    return type(attr, (), {})  # timm only references these names; EfficientNet never calls them


def stub_torchvision():
    """An empty 'torchvision' so that `import timm` succeeds without torchvision's compiled ops."""
    for name in ('torchvision', 'torchvision.transforms', 'torchvision.transforms.functional',
                 'torchvision.transforms.v2', 'torchvision.ops', 'torchvision.ops.misc', 'torchvision.datasets',
                 'torchvision.models', 'torchvision.models.feature_extraction', 'torchvision.utils'):
        module = types.ModuleType(name)
        module.__path__ = []
        module.__getattr__ = _placeholder_attribute
        sys.modules[name] = module
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(sys.modules[parent], child, module)
    modes = enum.Enum('InterpolationMode', {'BILINEAR': 'bilinear', 'BICUBIC': 'bicubic', 'NEAREST': 'nearest',
                                            'NEAREST_EXACT': 'nearest-exact', 'LANCZOS': 'lanczos',
                                            'HAMMING': 'hamming', 'BOX': 'box'})
    for name in ('torchvision.transforms', 'torchvision.transforms.functional'):
        sys.modules[name].InterpolationMode = modes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='tf_efficientnet_b0', choices=sorted(TIMM_TO_OURS))
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--stub-torchvision', action='store_true')
    args = parser.parse_args()
    if args.stub_torchvision:
        stub_torchvision()
    import jax
    import timm
    import torch

    from effnet_jax.convert import torch as torch_converter

    torch.manual_seed(0)
    timm_model = timm.create_model(args.model, pretrained=False).eval()
    with torch.no_grad():  # random BN statistics, so that a mix-up of mean/var would show
        for module in timm_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
    images = np.random.default_rng(0).normal(size=(2, args.size, args.size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    model, variables, report = torch_converter.convert_state_dict(timm_model.state_dict(), TIMM_TO_OURS[args.model])
    print(report.summary())
    ours = np.asarray(jax.jit(model.apply)(variables, images))
    print(f'{args.model} vs {TIMM_TO_OURS[args.model]} at {args.size}px: max |logit diff| = '
          f'{np.abs(ours - expected).max():.3g} (max |logit| {np.abs(expected).max():.3g})')


if __name__ == '__main__':
    main()
