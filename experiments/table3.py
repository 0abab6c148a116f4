"""Paper Table 3: MobileNetV1, MobileNetV2 and ResNet-50 scaled by depth, width, resolution, compound.

    python -m experiments.table3          # table: params and multiply-adds beside the paper's FLOPs
    python -m experiments.table3 --json   # one JSON object per row
    python -m experiments.table3 --train --workdir /tmp/table3 --out experiments/results
                                          # also train every row at small scale

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

Training (``--train``): every row's network, with the same multipliers, trained through the normal
training path as a point of the sweep runner (experiments/sweep.py), in WORKDIR/<model>/<point>:
an interrupted run resumes and finished rows are skipped. The base is ``--config`` (default
configs/table3_small.py: each family at 1/4 width, 32 px, 400 steps on the offline `glyph_shapes`
images); the row's depth, width and resolution multiply the config's, and ``--config.FIELD=VALUE``
overrides it (``--config=configs/b0.py`` on a TPU trains the full-size rows with the ImageNet
recipe; each row sets its own model). ``--rows`` picks rows by id (``mobilenet-v2/d4``,
``resnet-50/baseline``) or by family (``resnet-50``). The trained table (top-1 of the EMA weights,
train images/sec, the small networks' multiply-adds) is printed beside the paper's top-1 and written
to OUT/table3.csv; ``--print-commands`` prints one command per unfinished row, for a cluster or TPU
queue, instead of training.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from effnet_jax import scaling
from effnet_jax.models import create_model, resolve_model_spec
from effnet_jax.models.cost import model_cost

COMPOUND = dict(depth=1.4, width=1.2, resolution=1.3)
# (id, label, model name, create_model scaling arguments, paper multiply-adds in G or None,
#  paper top-1 %).
ROWS = (
    ("mobilenet-v1/baseline", "MobileNetV1", "mobilenet-v1", {}, 0.6, 70.6),
    ("mobilenet-v1/w2", "  width (w=2)", "mobilenet-v1", dict(width=2), 2.2, 74.2),
    ("mobilenet-v1/r2", "  resolution (r=2)", "mobilenet-v1", dict(resolution=2), 2.2, 72.7),
    ("mobilenet-v1/compound", "  compound (d=1.4, w=1.2, r=1.3)", "mobilenet-v1", COMPOUND, 2.3, 75.6),
    ("mobilenet-v2/baseline", "MobileNetV2", "mobilenet-v2", {}, 0.3, 72.0),
    ("mobilenet-v2/d4", "  depth (d=4)", "mobilenet-v2", dict(depth=4), 1.2, 76.8),
    ("mobilenet-v2/w2", "  width (w=2)", "mobilenet-v2", dict(width=2), 1.1, 76.4),
    ("mobilenet-v2/r2", "  resolution (r=2)", "mobilenet-v2", dict(resolution=2), 1.2, 74.8),
    ("mobilenet-v2/compound", "  compound (d=1.4, w=1.2, r=1.3)", "mobilenet-v2", COMPOUND, 1.3, 77.4),
    ("resnet-50/baseline", "ResNet-50", "resnet-50", {}, 4.1, 76.0),
    ("resnet-50/d4", "  depth (d=4): ResNet-200, 4x the layers", "resnet-200", {}, 16.2, 78.1),
    ("resnet-50/d4-every-stage", "  depth (d=4): every stage 4x, not in paper", "resnet-50",
     dict(depth=4), None, None),
    ("resnet-50/w2", "  width (w=2)", "resnet-50", dict(width=2), 14.7, 77.7),
    ("resnet-50/r2", "  resolution (r=2)", "resnet-50", dict(resolution=2), 16.4, 77.5),
    ("resnet-50/compound", "  compound (phi=2: d=1.44, w=1.21, r=1.32)", "resnet-50", dict(phi=2),
     16.7, 78.8),
    ("resnet-50/compound-1.4-1.2-1.3", "  compound (d=1.4, w=1.2, r=1.3), not in paper", "resnet-50",
     COMPOUND, None, None),
)
LABELS = {row_id: label for row_id, label, *_ in ROWS}  # row id -> label as printed (indented)
FAMILIES = sorted({row_id.split("/")[0] for row_id in LABELS})
TOLERANCE = 0.10  # multiply-adds within 10% of the paper's FLOPs
DEFAULT_TRAIN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "configs", "table3_small.py")


def measure(name: str, scaling_args: dict) -> dict:
    """Resolution, parameters and multiply-adds of one scaled model."""
    spec = resolve_model_spec(name, **scaling_args)
    cost = model_cost(create_model(name, **scaling_args), spec.resolution)
    return dict(model=spec.name, resolution=spec.resolution, params=cost.params, macs=cost.macs)


def select_rows(selection: str | None) -> tuple:
    """The ROWS whose id, or family (the part before '/'), is in the comma-separated `selection`."""
    if not selection:
        return ROWS
    wanted = [item.strip() for item in selection.split(",") if item.strip()]
    unknown = [item for item in wanted if item not in LABELS and item not in FAMILIES]
    if unknown:
        raise ValueError(f"Unknown --rows {unknown}; use row ids ({', '.join(LABELS)}) "
                         f"or families ({', '.join(FAMILIES)}).")
    return tuple(row for row in ROWS if row[0] in wanted or row[0].split("/")[0] in wanted)


def table3_rows(rows=ROWS) -> list[dict]:
    table = []
    for row_id, label, name, scaling_args, paper_gmacs, paper_top1 in rows:
        row = dict(id=row_id, label=label.strip(), **measure(name, scaling_args), paper_gmacs=paper_gmacs,
                   paper_top1=paper_top1)
        row["ratio_to_paper"] = row["macs"] / 1e9 / paper_gmacs if paper_gmacs else None
        row["within_tolerance"] = None if paper_gmacs is None else abs(row["ratio_to_paper"] - 1) <= TOLERANCE
        table.append(row)
    return table


def format_rows(rows: list[dict]) -> str:
    header = (f'{"row":48}{"model":32}{"res":>5}{"params":>13}{"ours G":>9}{"paper G":>9}{"ours/paper":>12}'
              f'{"paper top-1":>13}')
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = f'{row["paper_gmacs"]:.1f}' if row["paper_gmacs"] else "-"
        ratio = f'{row["ratio_to_paper"]:.3f}' if row["ratio_to_paper"] else "-"
        flag = "" if row["within_tolerance"] in (True, None) else "  <- outside 10%"
        top1 = f'{row["paper_top1"]:.1f}%' if row["paper_top1"] else "-"
        lines.append(f'{LABELS[row["id"]]:48}{row["model"]:32}{row["resolution"]:>5}{row["params"]:>13,}'
                     f'{row["macs"] / 1e9:>9.3f}{paper:>9}{ratio:>12}{top1:>13}{flag}')
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Training (--train): each row as a point of the sweep runner


def row_point(scaling_args: dict):
    """The sweep point with the row's multipliers (phi: compound scaling with the paper's α, β, γ)."""
    from experiments import sweep
    if "phi" in scaling_args:
        return sweep.compound_point(scaling_args["phi"], scaling.DEFAULT_ALPHA, scaling.DEFAULT_BETA,
                                    scaling.DEFAULT_GAMMA)
    return sweep.Point(depth=scaling_args.get("depth", 1.0), width=scaling_args.get("width", 1.0),
                       resolution=scaling_args.get("resolution", 1.0))


def train_rows(rows, config_spec: str, overrides: dict, workdir: str) -> list[dict]:
    """Trains every row (skipping finished ones); returns the table rows joined with their results.

    A row's model name goes in as a config override, its multipliers as the sweep point, so each
    row trains exactly like `python -m experiments.sweep --config.model=NAME --depth D ...`.
    """
    from experiments import sweep
    trained = []
    for row in rows:
        result, = sweep.run_points(config_spec, [row_point(row["scaling_args"])],
                                   {**overrides, "model": row["name"]}, os.path.join(workdir, row["name"]))
        trained.append({**{k: v for k, v in row.items() if k != "scaling_args"},
                        **{f"small_{key}": value for key, value in result.items()}})
    return trained


def row_commands(rows, config_spec: str, config_arguments, workdir: str) -> list[str]:
    """One `python -m experiments.sweep ... --point=NAME` command per unfinished row."""
    from experiments import sweep
    commands = []
    for row in rows:
        point, row_workdir = row_point(row["scaling_args"]), os.path.join(workdir, row["name"])
        if sweep.read_result(row_workdir, point) is None:
            arguments = ["--config", config_spec, *config_arguments, f"--config.model={row['name']}"]
            commands.append(sweep.point_command(sweep.point_argv(arguments, row_workdir, point), point))
    return commands


def format_trained(rows: list[dict]) -> str:
    header = (f'{"row":48}{"trained model":38}{"px":>5}{"params":>11}{"M mult-adds":>13}{"img/s":>8}'
              f'{"top-1":>8}{"paper top-1":>13}')
    lines = [header, "-" * len(header)]
    for row in rows:
        paper = f'{row["paper_top1"]:.1f}%' if row["paper_top1"] else "-"
        lines.append(f'{LABELS[row["id"]]:48}{row["small_model"]:38}{row["small_image_size"]:>5}'
                     f'{row["small_params"]:>11,}{row["small_macs"] / 1e6:>13.2f}'
                     f'{row["small_images_per_sec"]:>8.1f}{100 * row["small_best_top1"]:>7.1f}%'
                     f'{paper:>13}')
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m experiments.table3", description=__doc__.splitlines()[0],
                                     epilog="With --train, any --config.FIELD=VALUE overrides the config.")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--rows", help="comma-separated row ids or families (default: every row)")
    parser.add_argument("--train", action="store_true", help="train every row at small scale")
    parser.add_argument("--config", default=DEFAULT_TRAIN_CONFIG, help="--train: the base config")
    parser.add_argument("--workdir", help="--train: one directory per model and point lives here")
    parser.add_argument("--out", help="--train: where table3.csv goes (default WORKDIR)")
    parser.add_argument("--print-commands", action="store_true",
                        help="--train: print one sweep command per unfinished row instead of training")
    args, rest = parser.parse_known_args(argv)
    if (rest or args.workdir or args.print_commands) and not args.train:
        parser.error("--workdir, --print-commands and --config.FIELD=VALUE go with --train.")
    try:
        rows = select_rows(args.rows)
    except ValueError as error:
        parser.error(str(error))
    table = table3_rows(rows)
    print("\n".join(json.dumps(row) for row in table) if args.json else format_rows(table))
    if not args.train:
        return 0
    if not args.workdir:
        parser.error("--train needs --workdir.")
    from absl import logging
    from experiments import sweep
    logging.set_verbosity(logging.INFO)  # the trainer's progress lines
    overrides = sweep.parse_overrides(rest)  # --config.FIELD=VALUE only, for both paths
    for row, (_, _, name, scaling_args, _, _) in zip(table, rows):
        row.update(name=name, scaling_args=scaling_args)
    if args.print_commands:
        for command in row_commands(table, args.config, rest, args.workdir):
            print(command)
        return 0
    trained = train_rows(table, args.config, overrides, args.workdir)
    csv_path = os.path.join(args.out or args.workdir, "table3.csv")
    sweep.write_csv(trained, csv_path, ("id", "label", "name", "paper_gmacs", "paper_top1", "macs",
                                        "small_model", "small_image_size", "small_params", "small_macs",
                                        "small_images_per_sec", "small_best_top1", "small_best_raw_top1",
                                        "small_steps", "small_train_seconds"))
    print(("\n" + "\n".join(json.dumps(row) for row in trained)) if args.json
          else "\n" + format_trained(trained))
    print(f"[table3] {len(trained)} trained rows -> {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
