"""Paper Table 3: MobileNetV1, MobileNetV2 and ResNet-50 scaled by depth, width, resolution, compound.

    python experiments/table3.py          # table: params and multiply-adds beside the paper's FLOPs
    python experiments/table3.py --json   # one JSON object per row

Every model is built with ``create_model(name, depth=..., width=..., resolution=...)`` and measured
with ``model_cost`` (shape-only tracing: nothing is initialised or computed; ~10 s on a CPU). The
paper's "FLOPs" are multiply-adds (reference-spec §5.1, §5.2).

Notes on the rows (see also models/mobilenet.py and models/resnet.py for the rounding rules):
  - resolution r multiplies 224 and rounds to a multiple of 8 (r=1.3 -> 288, r=2 -> 448).
  - The paper gives the compound multipliers (d=1.4, w=1.2, r=1.3) only for MobileNetV1; MobileNetV2
    uses the same. For ResNet-50 those give 14.4 G, 14% below the paper's 16.7B; the paper's scaled rows
    all aim at ~4x the baseline, so the ResNet-50 compound row is the EfficientNet formula at phi=2
    (alpha=1.2, beta=1.1, gamma=1.15: d=1.44, w=1.21, r=1.32 -> 296 px), and the (1.4, 1.2, 1.3) model
    is printed as an extra row without a paper number.
  - ResNet-50 d=4: the paper does not say how the blocks are spread over the stages. He et al.'s
    200-layer ResNet ([3, 24, 36, 3] blocks, 4x ResNet-50's 50 layers) gives 15.0 G, 7% below the paper's
    16.2B; scaling every stage 4x ([12, 16, 24, 12]) gives 14.6 G, 10.1% below, printed as an extra row.
    w=2 gives 16.1 G against 14.7B (+9.5%); the two ResNet rows may be swapped in the paper.
  - ResNet-50 is v1.5 (stride on the 3x3 conv, no conv biases), 4.09 G; the original v1 is 3.86 G.

Training (``--train``, the top-1 column) is not implemented yet: the paper's top-1 numbers are printed
for reference only.
"""
from __future__ import annotations

import argparse
import json
import sys

from effnet_jax.models import create_model, resolve_model_spec
from effnet_jax.models.cost import model_cost

COMPOUND = dict(depth=1.4, width=1.2, resolution=1.3)
# (label, model name, create_model scaling arguments, paper multiply-adds in G or None, paper top-1 %).
ROWS = (
    ("MobileNetV1", "mobilenet-v1", {}, 0.6, 70.6),
    ("  width (w=2)", "mobilenet-v1", dict(width=2), 2.2, 74.2),
    ("  resolution (r=2)", "mobilenet-v1", dict(resolution=2), 2.2, 72.7),
    ("  compound (d=1.4, w=1.2, r=1.3)", "mobilenet-v1", COMPOUND, 2.3, 75.6),
    ("MobileNetV2", "mobilenet-v2", {}, 0.3, 72.0),
    ("  depth (d=4)", "mobilenet-v2", dict(depth=4), 1.2, 76.8),
    ("  width (w=2)", "mobilenet-v2", dict(width=2), 1.1, 76.4),
    ("  resolution (r=2)", "mobilenet-v2", dict(resolution=2), 1.2, 74.8),
    ("  compound (d=1.4, w=1.2, r=1.3)", "mobilenet-v2", COMPOUND, 1.3, 77.4),
    ("ResNet-50", "resnet-50", {}, 4.1, 76.0),
    ("  depth (d=4): ResNet-200, 4x the layers", "resnet-200", {}, 16.2, 78.1),
    ("  depth (d=4): every stage 4x, not in paper", "resnet-50", dict(depth=4), None, None),
    ("  width (w=2)", "resnet-50", dict(width=2), 14.7, 77.7),
    ("  resolution (r=2)", "resnet-50", dict(resolution=2), 16.4, 77.5),
    ("  compound (phi=2: d=1.44, w=1.21, r=1.32)", "resnet-50", dict(phi=2), 16.7, 78.8),
    ("  compound (d=1.4, w=1.2, r=1.3), not in paper", "resnet-50", COMPOUND, None, None),
)
TOLERANCE = 0.10  # multiply-adds within 10% of the paper's FLOPs


def measure(name: str, scaling_args: dict) -> dict:
    """Resolution, parameters and multiply-adds of one scaled model."""
    spec = resolve_model_spec(name, **scaling_args)
    cost = model_cost(create_model(name, **scaling_args), spec.resolution)
    return dict(model=spec.name, resolution=spec.resolution, params=cost.params, macs=cost.macs)


def table3_rows() -> list[dict]:
    rows = []
    for label, name, scaling_args, paper_gmacs, paper_top1 in ROWS:
        row = dict(label=label.strip(), **measure(name, scaling_args), paper_gmacs=paper_gmacs,
                   paper_top1=paper_top1)
        row["ratio_to_paper"] = row["macs"] / 1e9 / paper_gmacs if paper_gmacs else None
        row["within_tolerance"] = None if paper_gmacs is None else abs(row["ratio_to_paper"] - 1) <= TOLERANCE
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    header = (f'{"row":48}{"model":32}{"res":>5}{"params":>13}{"ours G":>9}{"paper G":>9}{"ours/paper":>12}'
              f'{"paper top-1":>13}')
    lines = [header, "-" * len(header)]
    labels = {label.strip(): label for label, *_ in ROWS}
    for row in rows:
        paper = f'{row["paper_gmacs"]:.1f}' if row["paper_gmacs"] else "-"
        ratio = f'{row["ratio_to_paper"]:.3f}' if row["ratio_to_paper"] else "-"
        flag = "" if row["within_tolerance"] in (True, None) else "  <- outside 10%"
        top1 = f'{row["paper_top1"]:.1f}%' if row["paper_top1"] else "-"
        lines.append(f'{labels[row["label"]]:48}{row["model"]:32}{row["resolution"]:>5}{row["params"]:>13,}'
                     f'{row["macs"] / 1e9:>9.3f}{paper:>9}{ratio:>12}{top1:>13}{flag}')
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    rows = table3_rows()
    print("\n".join(json.dumps(row) for row in rows) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
