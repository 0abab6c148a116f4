"""The benchmark's memory report and the side-by-side script's table (no model is compiled here)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnet_jax import benchmark
from experiments import side_by_side


def test_memory_analysis_adds_up():
    compiled = jax.jit(lambda x: jnp.tanh(x @ x) @ x).lower(jnp.ones((64, 64))).compile()
    numbers = benchmark.memory_analysis(compiled)
    if not numbers:  # a backend without memory analysis
        return
    assert numbers["argument_bytes"] == 64 * 64 * 4 and numbers["output_bytes"] == 64 * 64 * 4
    assert numbers["peak_bytes"] == (numbers["argument_bytes"] + numbers["output_bytes"] + numbers["temp_bytes"]
                                     - numbers["alias_bytes"])


def test_side_by_side_table_and_ratios():
    def result(train, infer, **extra):
        return dict(train=dict(images_per_sec=train, step_s=32 / train, **extra),
                    infer=dict(images_per_sec=infer, step_s=32 / infer, **extra))
    timm = result(4.0, 20.0, layout="channels_last")
    timm.update(channels_last=result(4.0, 20.0), contiguous=result(3.0, 10.0))
    report = dict(batch_size=32, resolution=224, steps=5, warmup=2, load_before=[0.1, 0.1, 0.1],
                  load_after=[1.0, 1.0, 1.0], machine=side_by_side.machine(),
                  results=dict(effnet_jax=result(8.0, 40.0, compile_s=1.0), keras=result(1.0, 5.0, compile_s=1.0),
                               timm=timm))
    table = side_by_side.markdown(report)
    assert "Host malloc: the system malloc" in table
    assert "| effnet_jax | 8.00 |" in table
    assert "effnet_jax / timm: train 2.00x, inference 2.00x" in table
    assert "effnet_jax / Keras on JAX: train 8.00x, inference 8.00x" in table
    report["results"]["effnet_jax"]["train_multi"] = dict(images_per_sec=12.0, step_s=32 / 12, compile_s=2.0,
                                                          steps_per_loop=8)
    table = side_by_side.markdown(report)
    assert "| effnet_jax, 8 train steps per call | 12.00 |" in table
    assert "effnet_jax / timm: train 2.00x (3.00x with 8 steps per call), inference 2.00x" in table
    assert "effnet_jax / Keras on JAX: train 8.00x (12.00x with 8 steps per call), inference 8.00x" in table
    report["results"]["timm"] = dict(skipped="timm failed or is not importable: ModuleNotFoundError")
    assert "skipped" in side_by_side.markdown(report)
    report.update(preload="/usr/lib/libjemalloc.so.2", malloc_conf=side_by_side.JEMALLOC_KEEP_PAGES)
    report["results"]["effnet_jax"]["host_allocator"] = "jemalloc"
    assert ("Host malloc: LD_PRELOAD=/usr/lib/libjemalloc.so.2, MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 "
            "(loaded: jemalloc)") in side_by_side.markdown(report)


def test_host_allocator_is_read_from_the_loaded_libraries(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert benchmark.host_allocator(str(maps)) == "system"
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert benchmark.host_allocator(str(maps)) == "jemalloc"
    assert benchmark.host_allocator(str(tmp_path / "missing")) == "system"


def test_page_faults_count_first_touches_of_fresh_memory():
    before = benchmark.minor_page_faults()
    if before is None:  # not Unix
        return
    fresh = np.ones(64 * 2**20, np.uint8)  # 64 MiB: a fresh mapping, touched once
    touched = benchmark.minor_page_faults() - before
    assert fresh.sum() == fresh.size
    assert touched >= 64 * 2**20 // (2 * 2**20)  # at least one fault per 2 MiB page, even with huge pages


def test_train_mode_compiles_the_trainers_step_and_reports_per_step_figures():
    """The benchmark builds its own config for train.make_train_step: every field the step reads must be
    there (a new trainer field once broke `--mode train` unnoticed). Two steps per call, as the trainer's
    multi-step call: compiled from abstract shapes (--compile-only), then timed (the same program, from
    the compilation cache), with per-step figures."""
    kwargs = dict(batch_size=8, resolution=32, mode="train", num_classes=10, steps_per_loop=2)
    result = benchmark.benchmark("mobilenet-v1", compile_only=True, **kwargs)
    assert result["compile_only"] and result["step_flops"] > 0 and result["steps_per_loop"] == 2
    assert result["batch_size"] == 8 and result["resolution"] == 32
    result = benchmark.benchmark("mobilenet-v1", steps=5, warmup=1, **kwargs)
    assert not result["compile_only"] and result["steps_per_loop"] == 2
    assert result["images_per_sec"] == round(8 / result["step_s"], 2)
    assert result["step_s_min"] <= result["step_s"] <= result["step_s_max"]


def test_steps_per_loop_is_refused_for_inference():
    with pytest.raises(ValueError, match="--steps-per-loop"):
        benchmark.benchmark("mobilenet-v3-small", batch_size=8, resolution=32, mode="infer", steps_per_loop=2)
