"""What a model costs: parameter counts and multiply-adds, taken from the model itself.

Nothing here is a table of constants. Parameter counts come from the shapes ``jax.eval_shape``
gives ``model.init``; multiply-adds come from walking the layers as they run (again under
``jax.eval_shape``, so no arithmetic happens): every convolution, depthwise convolution and dense
layer reports its output size and kernel. This is the count the paper calls FLOPS (reference-spec
§1.4: convolutions and the classifier; batch norm, activations and pooling are not counted).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnet_jax.models import layers


@dataclasses.dataclass(frozen=True)
class ModelCost:
    params: int  # trainable parameters ('params' collection)
    batch_stats: int  # batch-norm moving means and variances
    macs: int  # multiply-adds per image at ``resolution``
    resolution: int


def count_variables(tree) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def _layer_macs(module: nn.Module, inputs: jax.Array, outputs: jax.Array) -> int:
    """Multiply-adds of one layer for one image, or 0 for layers that are not counted."""
    output_positions = math.prod(outputs.shape[1:-1])  # spatial positions; 1 for Dense
    out_features = outputs.shape[-1]
    if isinstance(module, layers.DepthwiseConv):
        return output_positions * out_features * module.kernel_size**2
    if isinstance(module, nn.Conv):
        kernel_positions = math.prod(module.kernel_size)
        in_per_group = inputs.shape[-1] // module.feature_group_count
        return output_positions * out_features * kernel_positions * in_per_group
    if isinstance(module, nn.Dense):
        return output_positions * out_features * inputs.shape[-1]
    return 0


def _trace_init(model: nn.Module, resolution: int):
    """Shapes of the variables and the multiply-adds per image, from one shape-only ``model.init``.

    ``init`` runs the forward pass, so intercepting it sees every layer with its input and output.
    """
    macs = 0

    def interceptor(next_fun, args, kwargs, context):
        nonlocal macs
        outputs = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and args:
            macs += _layer_macs(context.module, args[0], outputs)
        return outputs

    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    return variables, macs


def model_cost(model: nn.Module, resolution: int | None = None) -> ModelCost:
    """Parameter, batch-statistic and multiply-add counts at ``resolution`` (default: the model's)."""
    resolution = int(resolution or model.resolution)
    if getattr(model, "scan_blocks", False):  # a scan traces its body once; the plain model counts every block
        model = model.clone(scan_blocks=False)
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}.")
    variables, macs = _trace_init(model, resolution)
    return ModelCost(
        params=count_variables(variables.get("params", {})),
        batch_stats=count_variables(variables.get("batch_stats", {})),
        macs=int(macs),
        resolution=resolution,
    )
