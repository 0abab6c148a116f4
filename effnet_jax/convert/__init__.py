"""Pretrained-weight import from other frameworks into effnet_jax variables.

  from effnet_jax.convert import tf_checkpoint, keras, torch
  model, variables, report = tf_checkpoint.convert_checkpoint(path, 'efficientnet-b0', ema=True)
  model, variables, report = keras.from_keras_weights_file(path, 'efficientnet-b0')
  model, variables, report = torch.convert_state_dict_file(path, 'efficientnet-lite0')

Each source module holds one name table (``core.Naming``); ``core.convert`` does the rest.
Frameworks are imported only by the module that needs them. Command line: ``python -m
effnet_jax.convert --help``; saved checkpoints load with ``effnet_jax.pretrained.load_pretrained``.
"""
from effnet_jax.convert.core import ConversionError, ConversionReport, Naming, convert

__all__ = ['ConversionError', 'ConversionReport', 'Naming', 'convert']
