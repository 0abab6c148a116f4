"""Convert pretrained EfficientNet weights from TF, Keras or PyTorch into an effnet_jax checkpoint.

  python -m effnet_jax.convert --source tf --model efficientnet-b0 --input ckpts/efficientnet-b0 --output b0 --ema
  python -m effnet_jax.convert --source keras --model efficientnet-b3 --input efficientnetb3.h5 --output b3
  python -m effnet_jax.convert --source torch --model efficientnet-lite0 --input lite0.pth --output lite0

Then ``effnet_jax.pretrained.load_pretrained('efficientnet-b0', 'b0')`` or
``python -m effnet_jax.predict --model efficientnet-b0 --weights b0 cat.jpg``.
Exits with status 2 and a list of the offending tensors when names or shapes do not match.
"""
from __future__ import annotations

import argparse
import os
import sys

SOURCES = ('tf', 'keras', 'torch')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m effnet_jax.convert', description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('--source', required=True, choices=SOURCES,
                        help='tf: tensorflow/tpu checkpoint (prefix or directory); keras: Keras applications '
                             '.h5/.weights.h5; torch: timm or lukemelas-style state dict (.pth).')
    parser.add_argument('--model', required=True, help="effnet_jax model name, e.g. 'efficientnet-b0'.")
    parser.add_argument('--input', required=True, help='the weights file, or TF checkpoint prefix/directory.')
    parser.add_argument('--output', required=True, help='directory to write (must not hold a checkpoint yet).')
    parser.add_argument('--ema', action='store_true',
                        help='tf only: take the /ExponentialMovingAverage shadows (what the reference evaluates).')
    parser.add_argument('--torch-style', choices=('timm', 'lukemelas'), default=None,
                        help='torch only: naming scheme; detected from the keys when omitted.')
    parser.add_argument('--allow-unexpected', action='store_true',
                        help='convert even if the source has tensors the model does not use (they are listed).')
    args = parser.parse_args(argv)
    if args.ema and args.source != 'tf':
        parser.error('--ema applies to --source tf only (Keras and PyTorch files hold one set of weights).')
    if args.torch_style and args.source != 'torch':
        parser.error('--torch-style applies to --source torch only.')
    from effnet_jax.models import model_names
    if args.model not in model_names():
        parser.error(f'unknown --model {args.model!r}; known: {", ".join(model_names())}.')
    if not os.path.exists(args.input) and not (args.source == 'tf' and os.path.exists(args.input + '.index')):
        parser.error(f'--input {args.input!r} does not exist.')
    return args


def convert_source(source: str, path: str, model_name: str, *, ema: bool = False, torch_style=None,
                   strict: bool = True):
    """Dispatches to the source's converter. Returns (model, variables, report)."""
    if source == 'tf':
        from effnet_jax.convert import tf_checkpoint
        return tf_checkpoint.convert_checkpoint(path, model_name, ema=ema, strict=strict)
    if source == 'keras':
        os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
        from effnet_jax.convert import keras as keras_converter
        return keras_converter.from_keras_weights_file(path, model_name, strict=strict)
    if source == 'torch':
        from effnet_jax.convert import torch as torch_converter
        return torch_converter.convert_state_dict_file(path, model_name, style=torch_style, strict=strict)
    raise ValueError(f'Unknown source {source!r}; expected one of {SOURCES}.')


def main(argv=None) -> int:
    args = parse_args(argv)
    from effnet_jax import pretrained
    from effnet_jax.convert.core import ConversionError
    try:
        model, variables, report = convert_source(args.source, args.input, args.model, ema=args.ema,
                                                  torch_style=args.torch_style, strict=not args.allow_unexpected)
    except (ConversionError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(report.summary())
    output = pretrained.save_pretrained(
        args.output, args.model, variables, num_classes=model.num_classes,
        extra_metadata={'source': args.source, 'input': os.path.abspath(args.input), 'ema': args.ema,
                        'converted_from': report.framework, 'notes': report.notes})
    print(f'wrote {output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
