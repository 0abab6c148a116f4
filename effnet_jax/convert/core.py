"""The part of every converter that does not depend on the source framework.

A converter has two halves:
  1. a *reader* that turns a foreign file into a flat ``{source_name: numpy array}`` dict
     (``tf_checkpoint.py``, ``keras.py``, ``torch.py``), and
  2. a *name table* (``Naming``) that says how that framework names each of our variables.
This module walks every variable our model has (from ``jax.eval_shape``, so nothing is
initialised), asks the naming for the source tensor, converts its memory layout, checks its shape
and builds the ``{'params', 'batch_stats'}`` tree. Everything that did not line up (missing, wrong
shape, left over) is collected first and reported in one error, so a user sees the whole picture
rather than the first problem.

Our variable paths (Flax, see ``effnet_jax.models.efficientnet``):
  params/stem_conv/kernel, params/stem_bn/{scale,bias}, batch_stats/stem_bn/{mean,var},
  params/blocks_{i}/{expand_conv,depthwise_conv,project_conv}/kernel, .../{bn0,bn1,bn2}/...,
  params/blocks_{i}/se/{reduce,expand}/{kernel,bias}, head_conv, head_bn, classifier/{kernel,bias}.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from effnet_jax.models import create_model

OurPath = tuple[str, ...]  # e.g. ('params', 'blocks_3', 'bn1', 'scale')

# Memory layouts of a tensor in its source framework; each converts to ours with LAYOUT_TO_OURS.
#   'same'          already ours: TF/Keras conv kernels (kh, kw, in, out), dense (in, out), vectors
#   'hwc1'          TF/Keras depthwise kernel (k, k, C, 1)            -> ours (k, k, 1, C)
#   'oihw'          PyTorch conv weight (out, in/groups, kh, kw)       -> (kh, kw, in/groups, out);
#                   a depthwise weight (C, 1, k, k) lands as (k, k, 1, C) by the same transpose
#   'out_in'        PyTorch Linear weight (out, in)                    -> (in, out)
LAYOUT_TO_OURS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'same': lambda a: a,
    'hwc1': lambda a: np.transpose(a, (0, 1, 3, 2)),
    'oihw': lambda a: np.transpose(a, (2, 3, 1, 0)),
    'out_in': lambda a: np.transpose(a, (1, 0)),
}

BATCH_NORMS = ('stem_bn', 'head_bn', 'bn0', 'bn1', 'bn2')


def module_kind(module: str) -> str:
    """What kind of layer one of our module names is: 'batch_norm', 'depthwise', 'dense' or 'conv'.

    ``module`` is the path inside the network or block, e.g. 'bn1', 'se/reduce', 'classifier'.
    """
    if module in BATCH_NORMS:
        return 'batch_norm'
    if module == 'depthwise_conv':
        return 'depthwise'
    if module == 'classifier':
        return 'dense'
    return 'conv'


@dataclasses.dataclass(frozen=True)
class BlockPosition:
    """Where block ``index`` sits: ``stage`` 1..7 as in the paper's Table 1, ``repeat`` 0-based inside
    the stage. Frameworks name blocks by one or the other (TF 'blocks_5', Keras 'block3a',
    timm 'blocks.2.0'); ``has_expansion`` changes the TF numbering and timm's block type."""

    index: int
    stage: int
    repeat: int
    has_expansion: bool


@dataclasses.dataclass(frozen=True)
class Naming:
    """How one source framework names our variables.

    Attributes:
      framework: shown in messages ('tensorflow checkpoint', 'keras', 'timm', ...).
      module_name: (block or None for stem/head, our module path inside it) -> source module name.
      variable_names: (module kind, our variable name) -> source variable name.
      separator: joins the module and variable names ('/' for TF and Keras, '.' for PyTorch).
      layouts: module kind -> memory layout of its kernel (see LAYOUT_TO_OURS); vectors are 'same'.
      ignore: source tensors that are expected in a file but are not weights (optimizer slots,
        step counters, ``num_batches_tracked``); they are counted but not reported as unexpected.
    """

    framework: str
    module_name: Callable[[BlockPosition | None, str], str]
    variable_names: Mapping[tuple[str, str], str]
    separator: str
    layouts: Mapping[str, str]
    ignore: Callable[[str], bool] = lambda name: False

    def source_for(self, path: OurPath, blocks: Mapping[str, BlockPosition]) -> tuple[str, str]:
        """(source tensor name, layout) for one of our variable paths."""
        _, *module_path, variable = path
        if module_path[0] in blocks:
            block, module = blocks[module_path[0]], '/'.join(module_path[1:])
        else:
            block, module = None, '/'.join(module_path)
        kind = module_kind(module)
        source_module = self.module_name(block, module)
        source_variable = self.variable_names[(kind, variable)]
        layout = self.layouts[kind] if variable == 'kernel' else 'same'
        return f'{source_module}{self.separator}{source_variable}', layout


class ConversionError(ValueError):
    """The source tensors do not fit the model; the message lists every offending tensor."""


@dataclasses.dataclass
class ConversionReport:
    """What happened to every tensor. ``source_name`` -> our path for the ones used."""

    framework: str
    model_name: str
    loaded: dict[str, str]
    missing: list[str]  # 'our/path <- source_name' with no such source tensor
    mismatched: list[str]  # 'source_name: shape a (as ours: b), expected c'
    unexpected: list[str]  # source tensors no variable of ours asked for
    ignored: list[str]  # source tensors that are not weights (optimizer slots, counters)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def summary(self) -> str:
        lines = [f'{self.framework} -> {self.model_name}: {len(self.loaded)} tensors converted, '
                 f'{len(self.missing)} missing, {len(self.mismatched)} with the wrong shape, '
                 f'{len(self.unexpected)} unexpected, {len(self.ignored)} ignored (not weights).']
        for title, items in (('missing', self.missing), ('wrong shape', self.mismatched),
                             ('unexpected', self.unexpected)):
            if items:
                items = sorted(items, key=_natural_key)
                shown = items[:40] + ([f'... and {len(items) - 40} more'] if len(items) > 40 else [])
                lines.append(f'  {title}:')
                lines.extend(f'    {item}' for item in shown)
        lines.extend(f'  note: {note}' for note in self.notes)
        return '\n'.join(lines)


def _natural_key(text: str):
    """Sorts 'blocks_2' before 'blocks_10' so that reports read in network order."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def block_positions(model) -> dict[str, BlockPosition]:
    """{'blocks_0': BlockPosition(...), ...} from the model's block layout."""
    positions = {}
    repeat, previous_stage = 0, None
    for index, spec in enumerate(model.blocks):
        repeat = repeat + 1 if spec.stage == previous_stage else 0
        previous_stage = spec.stage
        positions[f'blocks_{index}'] = BlockPosition(
            index=index, stage=spec.stage, repeat=repeat, has_expansion=spec.expand_ratio != 1)
    return positions


def variable_shapes(model) -> dict[OurPath, jax.ShapeDtypeStruct]:
    """Every variable of ``model`` with its shape, without initialising anything (eval_shape)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    return traverse_util.flatten_dict(dict(abstract))


def classifier_width(naming: Naming, tensors: Mapping[str, np.ndarray]) -> int | None:
    """The number of classes the source's classifier has (None if it has none)."""
    name, _ = naming.source_for(('params', 'classifier', 'bias'), {})
    return int(np.shape(tensors[name])[0]) if name in tensors else None


def convert(model_name: str, tensors: Mapping[str, np.ndarray], naming: Naming, *,
            num_classes: int | None = None, strict: bool = True, notes: list[str] | None = None):
    """Builds our variables for ``model_name`` from a flat dict of source tensors.

    Args:
      model_name: a ``create_model`` name, e.g. 'efficientnet-b0'.
      tensors: source name -> array, as the framework's reader produced it.
      naming: the source's name table.
      num_classes: classifier width; None takes it from the source's classifier.
      strict: raise ``ConversionError`` on unexpected tensors too (missing and wrongly shaped ones
        always raise). A file with extra tensors almost always belongs to a different model.
      notes: remarks from the reader to carry in the report (e.g. normalisation differences).

    Returns:
      (model, variables, report): the Flax module, ``{'params': ..., 'batch_stats': ...}`` of float32
      numpy arrays, and a ``ConversionReport``.
    """
    if num_classes is None:
        num_classes = classifier_width(naming, tensors) or 1000
    model = create_model(model_name, num_classes=num_classes)
    blocks = block_positions(model)
    flat_variables, loaded, missing, mismatched, wrong_shape_sources = {}, {}, [], [], set()
    for path, target in variable_shapes(model).items():
        source_name, layout = naming.source_for(path, blocks)
        our_name = '/'.join(path)
        if source_name not in tensors:
            missing.append(f'{our_name} <- {source_name}')
            continue
        source = np.asarray(tensors[source_name])
        value = LAYOUT_TO_OURS[layout](source) if source.ndim == len(target.shape) else source
        if value.shape != tuple(target.shape):
            mismatched.append(f'{source_name}: shape {source.shape} (as ours {value.shape}), '
                              f'{our_name} needs {tuple(target.shape)}')
            wrong_shape_sources.add(source_name)
            continue
        flat_variables[path] = np.asarray(value, np.float32)
        loaded[source_name] = our_name
    leftover = [name for name in tensors if name not in loaded and name not in wrong_shape_sources]
    ignored = [name for name in leftover if naming.ignore(name)]
    unexpected = [f'{name} {tuple(np.shape(tensors[name]))}' for name in leftover if not naming.ignore(name)]
    report = ConversionReport(naming.framework, model_name, loaded, missing, mismatched,
                              unexpected, ignored, list(notes or []))
    if missing or mismatched or (strict and unexpected):
        hint = ('' if not (missing or unexpected) else
                '\n  Whole blocks missing or left over mean weights of another model variant: '
                'pass the --model they were trained as.')
        raise ConversionError(f'Cannot convert to {model_name}:\n{report.summary()}{hint}')
    variables = traverse_util.unflatten_dict(flat_variables)
    return model, variables, report
