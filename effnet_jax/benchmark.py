"""Measure a model's speed and memory on this machine's devices.

    python -m effnet_jax.benchmark --model efficientnet-b0 --batch-size 32 --resolution 224 --mode train
    python -m effnet_jax.benchmark --model efficientnet-b7 --batch-size 8 --resolution 600 --mode train --remat --json
    python -m effnet_jax.benchmark --model efficientnet-b7 --batch-size 8 --mode train --scan --remat --compile-only
    python -m effnet_jax.benchmark --model efficientnet-b0 --batch-size 32 --mode train --steps-per-loop 8

Reports compile time, the median steady-state step time (after warm-up), images/sec, peak memory,
achieved FLOP/s and its fraction of a matmul peak that is measured in the same run on the same devices
(a jitted n³ matmul in the benchmark's dtype; n = 2048 on CPU, 8192 on GPU/TPU, big enough to saturate them).
Achieved FLOP/s counts the model's own work, 2 × multiply-adds per image (``models.model_cost``) × batch,
× 3 for a train step (forward + the two backward products): the usual MFU convention. XLA's cost analysis
of the compiled step is reported beside it (``xla_step_flops``) but not used, because it does not count
convolutions that run as library calls (cuDNN on GPU) and counts the shifted depthwise path's extra adds.

The train mode times the trainer's own step (``effnet_jax.train.make_train_step``: forward,
backward, RMSProp, EMA) with the reference recipe's defaults, so the numbers are what training sees.
Inputs are random and already on the devices: the input pipeline is not measured here
(``python -m effnet_jax.data.inspect`` measures that).

``--compile-only`` lowers and compiles the step from abstract shapes (no state is created and no
step runs), and reports the compile time and XLA's memory analysis of the compiled program: the
way to see B7's compile time and peak memory with and without ``--remat`` / ``--scan`` on a
machine that could not run the step. ``peak_bytes`` is then arguments + outputs + temporaries
minus donated (aliased) buffers, XLA's static estimate of the step's peak.

Host memory: XLA:CPU allocates a step's temporaries and outputs afresh every step, and with glibc's
malloc each allocation over 32 MiB is a new mapping whose pages the kernel faults in and zeroes on first
touch: about 1 million page faults (4 GB) per B0 train step at batch 32, a large part of the step on 2
cores. The benchmark reports them per timed step (``host_page_faults_per_step``) with the malloc in use
(``host_allocator``), and the slowest and fastest step beside the median (``step_s_min``,
``step_s_max``: an allocator that alternates between slow and fast steps shows up there). Running
several train steps per compiled call (``--steps-per-loop``, the trainer's ``config.steps_per_loop``)
faults a call's temporaries in once for all its steps; a malloc that keeps freed pages (jemalloc,
``LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``) removes most of them
too. The README has the numbers.

``--scan`` (``EfficientNet.scan_blocks``) compiles one body per stage instead of every block; XLA's
cost analysis then counts each scanned body once, so ``xla_step_flops`` is an underestimate with it
(FLOP/s and MFU come from the model's multiply-adds and stay right).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effnet_jax import optim, sharding, train
from effnet_jax.models import create_model, resolve_model_spec
from effnet_jax.models.cost import model_cost

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _step_seconds(run, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return times


def minor_page_faults() -> int | None:
    """This process's minor page faults so far (first touches of fresh host memory); None off Unix."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def host_allocator(maps_path: str = "/proc/self/maps") -> str:
    """'jemalloc', 'tcmalloc' or 'mimalloc' when that malloc is loaded here (LD_PRELOAD), else 'system'."""
    try:
        with open(maps_path) as maps:
            loaded = maps.read()
    except OSError:
        return "system"
    return next((name for name in ("jemalloc", "tcmalloc", "mimalloc") if f"lib{name}" in loaded), "system")


def matmul_peak_flops(dtype, size: int | None = None, steps: int = 5) -> float:
    """FLOP/s of a jitted size³ matmul on the default device: the "peak" that MFU is measured against."""
    size = size or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, a))
    return 2 * size**3 / statistics.median(_step_seconds(lambda: matmul(a, a), steps))


def memory_analysis(compiled) -> dict[str, int]:
    """XLA's static memory analysis of a compiled program, in bytes (empty if the backend has none).

    peak_bytes = arguments + outputs + temporaries - aliased (donated) buffers.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    numbers = dict(argument_bytes=analysis.argument_size_in_bytes, output_bytes=analysis.output_size_in_bytes,
                   temp_bytes=analysis.temp_size_in_bytes, alias_bytes=analysis.alias_size_in_bytes,
                   generated_code_bytes=analysis.generated_code_size_in_bytes)
    numbers = {key: int(value) for key, value in numbers.items()}
    numbers["peak_bytes"] = (numbers["argument_bytes"] + numbers["output_bytes"] + numbers["temp_bytes"]
                             - numbers["alias_bytes"])
    return numbers


def _peak_bytes(compiled) -> int | None:
    """Device peak if the runtime reports it (GPU/TPU), else XLA's static estimate for the program."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return memory_analysis(compiled).get("peak_bytes")


def benchmark(model_name: str, batch_size: int, resolution: int | None = None, mode: str = "train",
              dtype: str = "float32", steps: int = 7, warmup: int = 2, phi: float | None = None,
              remat: bool = False, depthwise_implementation: str = "auto", num_classes: int = 1000,
              scan_blocks: bool = False, compile_only: bool = False,
              pointwise_implementation: str = "auto", steps_per_loop: int = 1) -> dict:
    """Compiles and times one train or inference step; returns the reported numbers as a dict.

    ``remat`` and ``scan_blocks`` are the model switches of the same names (``EfficientNet``);
    ``compile_only`` compiles from abstract shapes and reports compile time and XLA's memory analysis
    without creating a state or running a step. ``steps_per_loop`` > 1 times the trainer's multi-step
    call (``config.steps_per_loop``): each timed call runs that many train steps, and the step
    figures are per step (call time / steps_per_loop).
    """
    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    if steps < 5:
        raise ValueError("Use at least 5 timed steps (--steps) so that the median means something.")
    if steps_per_loop < 1 or (steps_per_loop > 1 and mode != "train"):
        raise ValueError(f"--steps-per-loop must be >= 1, and 1 unless --mode train; got {steps_per_loop}.")
    spec = resolve_model_spec(model_name, phi=phi)
    resolution = int(resolution or spec.resolution)
    model = create_model(model_name, num_classes, DTYPES[dtype], phi=phi, remat=remat,
                         depthwise_implementation=depthwise_implementation,
                         pointwise_implementation=pointwise_implementation, scan_blocks=scan_blocks)
    mesh = sharding.create_mesh()
    sharding.check_batch_size(batch_size, mesh)
    config = ml_collections.ConfigDict(dict(optim.CONFIG_DEFAULTS, batch_size=batch_size, nan_policy="stop"))
    learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch=1000)
    tx = optim.create_optimizer(config, learning_rate_fn)
    init_fn = train.make_init_fn(model, tx, resolution)
    rng = np.random.default_rng(0)
    stacked = steps_per_loop > 1  # then one batch per step of the call, on a leading axis
    leading = (steps_per_loop,) if stacked else ()
    local_batch = dict(
        image=rng.uniform(0, 255, (*leading, batch_size, resolution, resolution, 3)).astype(np.float32),
        label=rng.integers(0, num_classes, (*leading, batch_size)).astype(np.int32),
        mask=np.ones((*leading, batch_size), np.float32))
    if compile_only:
        state = train.abstract_train_state(init_fn, 0, mesh)
        batch_sharding = sharding.batch_sharding(mesh, stacked)
        batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding),
                             local_batch)
    else:
        state = train.create_train_state(init_fn, 0, mesh)
        batch = sharding.make_global_batch(local_batch, mesh, stacked=stacked)
    if mode == "train":
        step = train.make_train_step(config, model, tx, learning_rate_fn, num_classes, mesh,
                                     bn_group_size=mesh.size, family=spec.family,
                                     steps_per_call=steps_per_loop)
        arguments = (state, batch)
    else:
        step = train.make_eval_step(model, mesh, family=spec.family)
        arguments = (state.params, state.batch_stats, batch)

    start = time.perf_counter()
    compiled = step.lower(*arguments).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_step_flops = float(cost.get("flops", 0.0)) if cost else 0.0
    step_flops = 2 * model_cost(model, resolution).macs * batch_size * (3 if mode == "train" else 1)
    result = dict(
        model=spec.name, mode=mode, dtype=dtype, batch_size=batch_size, resolution=resolution, remat=remat,
        scan_blocks=scan_blocks, depthwise_implementation=depthwise_implementation,
        pointwise_implementation=pointwise_implementation, steps_per_loop=steps_per_loop, devices=mesh.size,
        device_kind=jax.devices()[0].device_kind, backend=jax.default_backend(),
        compile_s=round(compile_s, 3), step_flops=step_flops, xla_step_flops=xla_step_flops,
    )
    if compile_only:
        return dict(result, compile_only=True, **memory_analysis(compiled))

    if mode == "train":
        holder = {"state": state}

        def run():
            holder["state"], metrics = compiled(holder["state"], batch)
            return metrics
    else:
        def run():
            return compiled(*arguments)

    for _ in range(warmup):
        jax.block_until_ready(run())
    faults_before = minor_page_faults()
    times = [seconds / steps_per_loop for seconds in _step_seconds(run, steps)]
    faults_after = minor_page_faults()
    step_s = statistics.median(times)
    peak = matmul_peak_flops(DTYPES[dtype])
    flops_per_sec = step_flops / step_s
    return dict(
        result, compile_only=False, step_s=round(step_s, 5), step_s_min=round(min(times), 5),
        step_s_max=round(max(times), 5), images_per_sec=round(batch_size / step_s, 2),
        peak_bytes=_peak_bytes(compiled), flops_per_sec=flops_per_sec, matmul_peak_flops_per_sec=peak,
        mfu=flops_per_sec / peak, host_allocator=host_allocator(),
        host_page_faults_per_step=(None if faults_before is None else
                                   (faults_after - faults_before) // (steps * steps_per_loop)),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnet_jax.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--phi", type=float)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, help="default: the model's")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--steps", type=int, default=7,
                        help="timed calls (median reported), each of --steps-per-loop steps")
    parser.add_argument("--steps-per-loop", type=int, default=1,
                        help="train steps per compiled call (config.steps_per_loop); figures are per step")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--remat", action="store_true", help="recompute block activations in the backward pass")
    parser.add_argument("--scan", action="store_true",
                        help="nn.scan over each stage's repeated blocks (faster compile of large models)")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile from abstract shapes; report compile time and XLA's memory analysis")
    parser.add_argument("--depthwise-implementation", default="auto", choices=("auto", "xla", "shifted"))
    parser.add_argument("--pointwise-implementation", default="auto", choices=("auto", "xla", "matmul"),
                        help="1x1 convolutions and the RGB stem: 'matmul' (reshape or patches + dot; "
                             "auto on CPU) or 'xla' (conv)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = benchmark(args.model, args.batch_size, args.resolution, args.mode, args.dtype, args.steps,
                           args.warmup, args.phi, args.remat, args.depthwise_implementation,
                           scan_blocks=args.scan, compile_only=args.compile_only,
                           pointwise_implementation=args.pointwise_implementation,
                           steps_per_loop=args.steps_per_loop)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    if args.json:
        print(json.dumps(result))
        return 0
    mib = f"{result['peak_bytes'] / 2**20:,.0f} MiB" if result.get("peak_bytes") else "n/a"
    switches = [name for name, on in (("remat", result["remat"]), ("scan", result["scan_blocks"]),
                                      (f"{result['steps_per_loop']} steps per call", result["steps_per_loop"] > 1))
                if on]
    print(f"{result['model']} {result['mode']} batch {result['batch_size']} at {result['resolution']}px, "
          f"{result['dtype']}, {result['devices']} x {result['device_kind']}"
          f"{' (' + ', '.join(switches) + ')' if switches else ''}")
    print(f"  compile        {result['compile_s']:.1f} s")
    if result["compile_only"]:
        print(f"  peak memory    {mib} (XLA memory analysis: arguments + outputs + temporaries - donated)")
        if result.get("temp_bytes") is not None:
            print(f"  temporaries    {result['temp_bytes'] / 2**20:,.0f} MiB")
        return 0
    print(f"  step           {result['step_s'] * 1000:.1f} ms (median of {args.steps}; "
          f"{result['step_s_min'] * 1000:.0f}-{result['step_s_max'] * 1000:.0f} ms)")
    print(f"  images/sec     {result['images_per_sec']:.1f}")
    print(f"  peak memory    {mib}")
    if result["host_page_faults_per_step"] is not None:
        print(f"  host memory    {result['host_page_faults_per_step']:,} page faults per step "
              f"({result['host_allocator']} malloc)")
    print(f"  achieved       {result['flops_per_sec'] / 1e9:.1f} GFLOP/s "
          f"({result['mfu'] * 100:.1f}% of a {result['matmul_peak_flops_per_sec'] / 1e9:.0f} GFLOP/s matmul)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
