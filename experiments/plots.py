"""Plots of sweep rows: top-1 against multiply-adds, and the grid search's bars (matplotlib, Agg)."""
from __future__ import annotations

import os
from typing import Callable, Sequence

from effnet_jax import scaling

PAPER_TRIPLE = (scaling.DEFAULT_ALPHA, scaling.DEFAULT_BETA, scaling.DEFAULT_GAMMA)


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')  # files only; no display on a server
  from matplotlib import pyplot
  return pyplot


def plot_lines(rows: Sequence[dict], group_key: str, path: str, title: str,
               label_point: Callable[[dict], str] | None = None) -> None:
  """Top-1 (%) against multiply-adds (millions, log scale), one line per value of `group_key`."""
  pyplot = _pyplot()
  figure, axes = pyplot.subplots(figsize=(7, 4.8))
  groups: dict[str, list[dict]] = {}
  for row in rows:
    groups.setdefault(str(row[group_key]), []).append(row)
  for group, members in groups.items():
    members = sorted(members, key=lambda r: r['macs'])
    xs = [r['macs'] / 1e6 for r in members]
    ys = [100 * r['best_top1'] for r in members]
    axes.plot(xs, ys, marker='o', label=group)
    if label_point:
      for row, x, y in zip(members, xs, ys):
        axes.annotate(label_point(row), (x, y), textcoords='offset points', xytext=(4, 4),
                      fontsize=7)
  axes.set_xscale('log')
  from matplotlib import ticker
  axes.xaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
  axes.xaxis.set_minor_formatter(ticker.FormatStrFormatter('%g'))
  axes.set_xlabel('multiply-adds per image (millions, log scale)')
  axes.set_ylabel('top-1 accuracy (%)')
  axes.set_title(title, fontsize=10)
  axes.grid(True, alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


def plot_grid(rows: Sequence[dict], path: str, title: str) -> None:
  """Top-1 of each (α, β, γ) triple as bars; the paper's triple is highlighted."""
  pyplot = _pyplot()
  figure, axes = pyplot.subplots(figsize=(7, 4.2))
  labels = [f'{r["alpha"]:g}/{r["beta"]:g}/{r["gamma"]:g}' for r in rows]
  colours = ['tab:red' if (r['alpha'], r['beta'], r['gamma']) == PAPER_TRIPLE else 'tab:blue'
             for r in rows]
  axes.bar(range(len(rows)), [100 * r['best_top1'] for r in rows], color=colours)
  axes.set_xticks(range(len(rows)), labels, rotation=45, ha='right', fontsize=8)
  axes.set_xlabel('α / β / γ at φ = 1 (red: the paper\'s 1.2 / 1.1 / 1.15)')
  axes.set_ylabel('top-1 accuracy (%)')
  low = min(100 * r['best_top1'] for r in rows)
  axes.set_ylim(max(0, low - 10), None)
  axes.set_title(title, fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  pyplot.close(figure)
