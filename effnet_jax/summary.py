"""Describe a model: per-stage architecture table, parameters and multiply-adds.

    python -m effnet_jax.summary --model efficientnet-b3
    python -m effnet_jax.summary --model efficientnet --phi 2.5 --json
    python -m effnet_jax.summary --model efficientnet-b0 --resolution 320

Counts come from the model itself (``effnet_jax.models.cost``), never from a table. For named
variants the compound-scaling formula at φ = k (for bk / litek) is shown beside the published
multipliers, since the published table is not exactly α^φ, β^φ, γ^φ (reference-spec §1.5).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys

from effnet_jax import scaling
from effnet_jax.models import create_model, model_names, registry, resolve_model_spec
from effnet_jax.models.cost import model_cost


def stage_rows(model, resolution: int) -> list[dict]:
    """One row per stage (stem, MBConv stages, head) with the output side at ``resolution``.

    Families other than EfficientNet describe themselves (``model.stage_rows``, same row format).
    """
    if hasattr(model, "stage_rows"):
        return model.stage_rows(resolution)
    side = math.ceil(resolution / 2)
    rows = [dict(stage="stem", block="Conv3x3", kernel=3, stride=2, expansion=None, channels=model.stem_filters,
                 repeats=1, output_size=side)]
    for stage, group in itertools.groupby(model.blocks, key=lambda spec: spec.stage):
        group = list(group)
        first = group[0]
        side = math.ceil(side / first.strides)
        rows.append(dict(
            stage=str(stage),
            block=f"MBConv{first.expand_ratio}" + ("+SE" if first.se_filters else ""),
            kernel=first.kernel_size,
            stride=first.strides,
            expansion=first.expand_ratio,
            channels=first.out_filters,
            repeats=len(group),
            output_size=side,
        ))
    if model.include_head:
        rows.append(dict(stage="head", block="Conv1x1+pool+FC", kernel=1, stride=1, expansion=None,
                         channels=model.head_filters, repeats=1, output_size=side))
    return rows


def scaling_comparison(spec) -> dict | None:
    """Published multipliers beside α^φ, β^φ, γ^φ for a named variant (bk and litek: φ = k)."""
    if spec.scaling is not None:
        compound = spec.scaling
        return dict(phi=compound.phi, formula=dict(depth=compound.depth, width=compound.width,
                                                   resolution=compound.resolution),
                    flops_growth_per_phi=compound.flops_growth_per_phi,
                    meets_flops_target=compound.meets_flops_target,
                    predicted_flops_growth=compound.flops_growth)
    match = re.fullmatch(r"efficientnet-(?:b|lite)(\d)", spec.name)
    if not match:
        return None
    compound = scaling.compound_scaling(int(match.group(1)))
    return dict(
        phi=compound.phi,
        published=dict(depth=spec.depth, width=spec.width, resolution=spec.resolution),
        formula=dict(depth=round(compound.depth, 4), width=round(compound.width, 4), resolution=compound.resolution),
        flops_growth_per_phi=compound.flops_growth_per_phi,
        meets_flops_target=compound.meets_flops_target,
        predicted_flops_growth=compound.flops_growth,
    )


def summarize(name: str, resolution: int | None = None, **scaling_args) -> dict:
    """Everything the command prints, as one JSON-serialisable dict."""
    spec = resolve_model_spec(name, **scaling_args)
    model = create_model(name, **scaling_args)
    resolution = int(resolution or spec.resolution)
    cost = model_cost(model, resolution)
    compound = scaling_comparison(spec)
    if compound:
        baseline = create_model(registry.baseline_name(spec))
        compound["measured_flops_growth"] = cost.macs / model_cost(baseline, baseline.resolution).macs
    return dict(
        model=spec.name,
        family=spec.family,
        width=spec.width,
        depth=spec.depth,
        default_resolution=spec.resolution,
        resolution=resolution,
        dropout_rate=model.dropout_rate,
        blocks=len(model.blocks),
        params=cost.params,
        batch_stats=cost.batch_stats,
        macs=cost.macs,
        stages=stage_rows(model, resolution),
        compound_scaling=compound,
    )


def format_table(summary: dict) -> str:
    header = ("stage", "block", "kernel", "stride", "exp", "channels", "repeats", "out size")
    rows = [(r["stage"], r["block"], r["kernel"], r["stride"], r["expansion"] or "-", r["channels"], r["repeats"],
             f'{r["output_size"]}x{r["output_size"]}') for r in summary["stages"]]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
    out = [f'{summary["model"]}  (width {summary["width"]:g}, depth {summary["depth"]:g}, '
           f'resolution {summary["resolution"]}, dropout {summary["dropout_rate"]:g}, {summary["blocks"]} blocks)',
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append("")
    out.append(f'trainable parameters: {summary["params"]:,}')
    out.append(f'batch-norm statistics: {summary["batch_stats"]:,}')
    out.append(f'multiply-adds per image at {summary["resolution"]}: {summary["macs"]:,} ({summary["macs"] / 1e9:.3f} G)')
    compound = summary["compound_scaling"]
    if compound:
        out.append("")
        target = "within" if compound["meets_flops_target"] else "OUTSIDE"
        out.append(f'compound scaling at phi={compound["phi"]:g}: alpha*beta^2*gamma^2 = '
                   f'{compound["flops_growth_per_phi"]:.4f} ({target} {scaling.FLOPS_GROWTH_TARGET:g} '
                   f'+- {scaling.FLOPS_GROWTH_TOLERANCE:g}); multiply-adds vs the baseline: predicted '
                   f'{compound["predicted_flops_growth"]:.2f}x, this model {compound["measured_flops_growth"]:.2f}x')
        formula = compound["formula"]
        published = compound.get("published")
        out.append(f'{"":12}{"depth":>8}{"width":>8}{"resolution":>12}')
        if published:
            out.append(f'{"published":12}{published["depth"]:>8g}{published["width"]:>8g}{published["resolution"]:>12}')
        out.append(f'{"formula":12}{formula["depth"]:>8.4g}{formula["width"]:>8.4g}{formula["resolution"]:>12}')
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnet_jax.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(model_names(all_families=True))}; or 'efficientnet' with --phi")
    parser.add_argument("--resolution", type=int, help="input side in pixels (default: the model's)")
    parser.add_argument("--phi", type=float, help="compound coefficient: scale the family's baseline by the formula")
    parser.add_argument("--alpha", type=float, default=scaling.DEFAULT_ALPHA)
    parser.add_argument("--beta", type=float, default=scaling.DEFAULT_BETA)
    parser.add_argument("--gamma", type=float, default=scaling.DEFAULT_GAMMA)
    parser.add_argument("--depth", type=float, help="depth multiplier on top of the model")
    parser.add_argument("--width", type=float, help="width multiplier on top of the model")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    scaling_args = dict(depth=args.depth, width=args.width)
    if args.phi is not None:
        scaling_args.update(phi=args.phi, alpha=args.alpha, beta=args.beta, gamma=args.gamma)
    try:
        summary = summarize(args.model, args.resolution, **scaling_args)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
