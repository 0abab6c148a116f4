"""EfficientNet-B0 train step and inference: effnet_jax vs Keras 3 on JAX vs timm on PyTorch, one run.

    python -m experiments.side_by_side                          # B0, batch 32, 224x224, float32 (~15 min on 2 cores)
    python -m experiments.side_by_side --batch-size 4 --resolution 64 --steps 5   # a quick check
    python -m experiments.side_by_side --json                   # one JSON object instead of the table

Run it from the repository root, on an otherwise idle machine (it prints the load average before and
after). Each framework runs in its own subprocess, one after the other, so none competes with another
for cores or keeps the others' threads alive:

- effnet_jax: ``effnet_jax.benchmark.benchmark`` -- the trainer's own jitted step (forward, backward,
  RMSProp, EMA; stochastic depth and dropout on) and the jitted eval step, with the defaults (on CPU the
  shifted depthwise convolution and 1×1 convolutions as matmuls). The train step is measured twice: one
  step per call, as the others run, and ``--steps-per-loop`` steps per call (default 16), the trainer's
  ``config.steps_per_loop``, which page-faults a call's temporaries in once for all its steps.
- Keras 3 on the JAX backend: ``keras.applications.EfficientNetB0(weights=None)`` compiled with
  ``jit_compile=True``, RMSprop and sparse cross-entropy; the train step is Keras' own
  ``model.train_on_batch`` (its jitted JAX train function), inference ``model.predict_on_batch``.
  Inputs are already JAX arrays on the device. Keras' model includes its input rescaling/normalisation.
- timm on PyTorch: ``timm.create_model('efficientnet_b0')``, eager, CPU, ``torch.set_num_threads`` to
  every usable core; train = zero_grad, forward, cross-entropy, backward, RMSprop step; inference under
  ``torch.inference_mode()``. Both memory layouts are measured (channels_last and contiguous NCHW) and
  the ratios use timm's faster one. timm is found through ``--timm-path`` (default /tmp/timmpkgs, a
  ``pip install --target`` directory holding torch, torchvision and timm, kept out of the project's
  environment); if it does not import, timm is skipped with the reason.

Every number is the median of ``--steps`` timed steps after ``--warmup`` untimed ones (the first of
which compiles, for the JAX frameworks). Not part of CI.

``--preload LIB`` runs every framework with another malloc (``LD_PRELOAD``), e.g. jemalloc from
``apt install libjemalloc2``, configured to keep freed pages (``MALLOC_CONF=dirty_decay_ms:-1,
muzzy_decay_ms:-1`` unless MALLOC_CONF is set). On CPU the allocator matters as much as the kernels:
each framework allocates fresh buffers every step and glibc hands large ones back to the kernel, so
every step page-faults them in again (``python -m effnet_jax.benchmark`` reports the faults per step).
Each worker reports the malloc it ran with (``host_allocator``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

DEFAULT_TIMM_PATH = '/tmp/timmpkgs'
JEMALLOC_KEEP_PAGES = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'  # never return freed pages to the kernel
FRAMEWORKS = ('effnet_jax', 'keras', 'timm')


def _median_seconds(run, steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _timed_first_call(run) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _numpy_batch(batch_size: int, resolution: int, channels_first: bool = False):
  import numpy as np
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (batch_size, resolution, resolution, 3)).astype(np.float32)
  if channels_first:
    images = images.transpose(0, 3, 1, 2).copy()
  labels = rng.integers(0, 1000, batch_size).astype(np.int32)
  return images, labels


# ----------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line.


def run_effnet_jax(args) -> dict:
  import flax
  import jax

  from effnet_jax import benchmark
  result = dict(versions=dict(jax=jax.__version__, flax=flax.__version__))
  runs = [('train', 'train', 1), ('infer', 'infer', 1)]
  if args.steps_per_loop > 1:
    runs.append(('train_multi', 'train', args.steps_per_loop))
  for key, mode, steps_per_loop in runs:
    numbers = benchmark.benchmark('efficientnet-b0', args.batch_size, args.resolution, mode=mode,
                                  steps=args.steps, warmup=args.warmup, steps_per_loop=steps_per_loop)
    result[key] = dict(step_s=numbers['step_s'], images_per_sec=numbers['images_per_sec'],
                       compile_s=numbers['compile_s'], steps_per_loop=steps_per_loop)
  result['setup'] = 'trainer step (RMSProp, EMA) / eval step, jax.jit'
  result['host_allocator'] = benchmark.host_allocator()
  return result


def run_keras(args) -> dict:
  os.environ['KERAS_BACKEND'] = 'jax'
  import jax
  import jax.numpy as jnp
  import keras

  images, labels = _numpy_batch(args.batch_size, args.resolution)
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  model = keras.applications.EfficientNetB0(weights=None, input_shape=(args.resolution, args.resolution, 3),
                                            classes=1000)
  model.compile(optimizer=keras.optimizers.RMSprop(), loss=keras.losses.SparseCategoricalCrossentropy(),
                jit_compile=True)
  result = dict(versions=dict(keras=keras.__version__, jax=jax.__version__))
  steps = {'train': lambda: model.train_on_batch(images, labels),  # returns a host float: synchronises
           'infer': lambda: model.predict_on_batch(images)}       # returns numpy: synchronises
  for mode, run in steps.items():
    first = _timed_first_call(run)
    for _ in range(args.warmup - 1):
      run()
    step_s = _median_seconds(run, args.steps)
    result[mode] = dict(step_s=step_s, images_per_sec=args.batch_size / step_s, compile_s=first - step_s)
  result['setup'] = 'model.train_on_batch / predict_on_batch, jit_compile=True, RMSprop'
  from effnet_jax.benchmark import host_allocator
  result['host_allocator'] = host_allocator()
  return result


def _import_timm():
  """Imports timm, falling back to an empty torchvision stub (timm's EfficientNets do not use it)."""
  try:
    import timm
    return timm, ''
  except Exception as error:  # torchvision's compiled ops may not load beside a CPU torch
    for name in [name for name in sys.modules if name.startswith(('timm', 'torchvision'))]:
      del sys.modules[name]
    from experiments.timm_parity import stub_torchvision
    stub_torchvision()
    import timm
    return timm, f'torchvision stubbed ({type(error).__name__}: {error})'


def run_timm(args) -> dict:
  import torch
  timm, note = _import_timm()
  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  images, labels = _numpy_batch(args.batch_size, args.resolution, channels_first=True)
  result = dict(versions=dict(torch=torch.__version__, timm=timm.__version__), threads=threads, note=note)
  for layout in ('channels_last', 'contiguous'):
    memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
    model = timm.create_model('efficientnet_b0', pretrained=False, num_classes=1000)
    model = model.to(memory_format=memory_format)
    x = torch.from_numpy(images).to(memory_format=memory_format)
    y = torch.from_numpy(labels).long()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(model(x), y)
      loss.backward()
      optimizer.step()
      return loss.item()

    def infer_step():
      with torch.inference_mode():
        return model(x).sum().item()

    numbers = {}
    for mode, run in (('train', train_step), ('infer', infer_step)):
      model.train(mode == 'train')
      for _ in range(args.warmup):
        run()
      step_s = _median_seconds(run, args.steps)
      numbers[mode] = dict(step_s=step_s, images_per_sec=args.batch_size / step_s)
    result[layout] = numbers
  for mode in ('train', 'infer'):
    best = max(('channels_last', 'contiguous'), key=lambda layout: result[layout][mode]['images_per_sec'])
    result[mode] = dict(result[best][mode], layout=best)
  result['setup'] = 'eager PyTorch, RMSprop; best of channels_last / contiguous per mode'
  from effnet_jax.benchmark import host_allocator  # after the timing: it imports JAX
  result['host_allocator'] = host_allocator()
  return result


WORKERS = {'effnet_jax': run_effnet_jax, 'keras': run_keras, 'timm': run_timm}


# ----------------------------------------------------------------------------------------------
# Driver


def machine() -> dict:
  model_name = platform.processor()
  try:
    with open('/proc/cpuinfo') as file:
      for line in file:
        if line.startswith('model name'):
          model_name = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return dict(cpu=model_name, cpu_count=os.cpu_count(), usable_cpus=len(os.sched_getaffinity(0)),
              platform=platform.platform(), python=platform.python_version())


def preload_environment(preload: str | None, environ=os.environ) -> dict:
  """The variables that make a worker run with the malloc `preload` (none without one): LD_PRELOAD,
  and for jemalloc MALLOC_CONF=JEMALLOC_KEEP_PAGES unless MALLOC_CONF is already set."""
  if not preload:
    return {}
  variables = {'LD_PRELOAD': os.pathsep.join(filter(None, [preload, environ.get('LD_PRELOAD')]))}
  if 'MALLOC_CONF' in environ or 'jemalloc' in os.path.basename(preload):
    variables['MALLOC_CONF'] = environ.get('MALLOC_CONF', JEMALLOC_KEEP_PAGES)
  return variables


def _run_worker(name: str, args) -> dict:
  command = [sys.executable, '-m', 'experiments.side_by_side', '--worker', name,
             '--batch-size', str(args.batch_size), '--resolution', str(args.resolution),
             '--steps', str(args.steps), '--warmup', str(args.warmup),
             '--steps-per-loop', str(args.steps_per_loop)]
  env = {**os.environ, **preload_environment(args.preload)}
  if name == 'timm':
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [args.timm_path, os.getcwd(), env.get('PYTHONPATH')]))
  start = time.perf_counter()
  process = subprocess.run(command, env=env, capture_output=True, text=True)
  wall_s = time.perf_counter() - start
  lines = [line for line in process.stdout.splitlines() if line.startswith('{')]
  if process.returncode != 0 or not lines:
    reason = (process.stderr.strip().splitlines() or ['no output'])[-1]
    return dict(skipped=f'{name} failed or is not importable: {reason}', wall_s=wall_s)
  return dict(json.loads(lines[-1]), wall_s=wall_s)


def _ratio(results, numerator, denominator, mode):
  """numerator's images/sec in `mode` over denominator's; 'train_multi' (effnet_jax's multi-step
  calls) is compared with the other's 'train'."""
  a, b = results.get(numerator, {}), results.get(denominator, {})
  other_mode = 'train' if mode == 'train_multi' else mode
  if mode not in a or other_mode not in b:
    return None
  return a[mode]['images_per_sec'] / b[other_mode]['images_per_sec']


def markdown(report: dict) -> str:
  results = report['results']
  lines = [
      f"EfficientNet-B0, batch {report['batch_size']}, {report['resolution']}x{report['resolution']}, "
      f"float32; median of {report['steps']} steps after {report['warmup']} warm-up",
      '',
      '| framework | train img/s | train step (s) | inference img/s | inference step (s) | first-call overhead (s) |',
      '|---|---|---|---|---|---|',
  ]
  for name in FRAMEWORKS:
    result = results.get(name)
    if result is None:
      continue
    if 'skipped' in result:
      lines.append(f'| {name} | skipped: {result["skipped"]} | | | | |')
      continue
    train, infer = result['train'], result['infer']
    label = name if name != 'timm' else f"timm ({train['layout']} / {infer['layout']})"
    compile_s = train.get('compile_s')
    compile_text = f"{compile_s:.1f} / {infer['compile_s']:.1f}" if compile_s is not None else 'eager'
    lines.append(f"| {label} | {train['images_per_sec']:.2f} | {train['step_s']:.3f} | "
                 f"{infer['images_per_sec']:.2f} | {infer['step_s']:.3f} | {compile_text} |")
    if 'train_multi' in result:
      multi = result['train_multi']
      lines.append(f"| {name}, {multi['steps_per_loop']} train steps per call | {multi['images_per_sec']:.2f} | "
                   f"{multi['step_s']:.3f} | | | {multi['compile_s']:.1f} |")
  lines.append('')
  for other, label in (('timm', 'timm'), ('keras', 'Keras on JAX')):
    train, infer = _ratio(results, 'effnet_jax', other, 'train'), _ratio(results, 'effnet_jax', other, 'infer')
    if train is not None:
      multi = _ratio(results, 'effnet_jax', other, 'train_multi')
      multi_text = '' if multi is None else (
          f" ({multi:.2f}x with {results['effnet_jax']['train_multi']['steps_per_loop']} steps per call)")
      lines.append(f'effnet_jax / {label}: train {train:.2f}x{multi_text}, inference {infer:.2f}x')
  if 'timm' in results and 'channels_last' in results['timm']:
    timm = results['timm']
    lines.append('timm layouts (img/s): ' + ', '.join(
        f"{layout} train {timm[layout]['train']['images_per_sec']:.2f} infer {timm[layout]['infer']['images_per_sec']:.2f}"
        for layout in ('channels_last', 'contiguous')))
  versions = {}
  for result in results.values():
    versions.update(result.get('versions', {}))
  info = report['machine']
  allocators = sorted({result['host_allocator'] for result in results.values() if 'host_allocator' in result})
  malloc = 'the system malloc'
  if report.get('preload'):
    variables = (('LD_PRELOAD', 'preload'), ('MALLOC_CONF', 'malloc_conf'))
    malloc = ', '.join(f'{name}={report[key]}' for name, key in variables if report.get(key))
  lines += ['', f"Host malloc: {malloc} (loaded: {', '.join(allocators) or 'unknown'})"]
  lines += [f"Machine: {info['cpu']}, {info['usable_cpus']} usable of {info['cpu_count']} CPUs, "
                f"{info['platform']}, Python {info['python']}",
            'Versions: ' + ', '.join(f'{k} {v}' for k, v in sorted(versions.items())),
            f"Load average (1/5/15 min) before: {report['load_before']}, after: {report['load_after']}"]
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.side_by_side', description=__doc__.splitlines()[0])
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5, help='timed steps per measurement (median reported)')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps first (>= 1: the compile)')
  parser.add_argument('--steps-per-loop', type=int, default=16,
                      help="effnet_jax's train step is also measured with this many steps per compiled call "
                           '(config.steps_per_loop; 1: not)')
  parser.add_argument('--frameworks', default=','.join(FRAMEWORKS), help='comma-separated subset of ' +
                      ', '.join(FRAMEWORKS))
  parser.add_argument('--timm-path', default=DEFAULT_TIMM_PATH,
                      help='a directory with torch, torchvision and timm, put on PYTHONPATH for timm only')
  parser.add_argument('--preload', metavar='LIB',
                      help='a malloc to LD_PRELOAD into every framework, e.g. /usr/lib/x86_64-linux-gnu/'
                           'libjemalloc.so.2 (jemalloc then keeps freed pages: '
                           f'MALLOC_CONF={JEMALLOC_KEEP_PAGES})')
  parser.add_argument('--json', action='store_true')
  parser.add_argument('--worker', choices=tuple(WORKERS), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps < 5:
    parser.error('--steps must be at least 5 so that the median means something.')
  if args.warmup < 1:
    parser.error('--warmup must be at least 1 (the first call compiles).')
  if args.worker:
    print(json.dumps(WORKERS[args.worker](args)))
    return 0
  if args.preload and not os.path.isfile(args.preload):
    parser.error(f'--preload {args.preload}: no such file (jemalloc: apt install libjemalloc2, then '
                 '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2).')

  frameworks = [name.strip() for name in args.frameworks.split(',') if name.strip()]
  unknown = set(frameworks) - set(FRAMEWORKS)
  if unknown:
    parser.error(f'unknown --frameworks {sorted(unknown)}; choose from {FRAMEWORKS}.')
  report = dict(batch_size=args.batch_size, resolution=args.resolution, steps=args.steps, warmup=args.warmup,
                preload=args.preload, malloc_conf=preload_environment(args.preload).get('MALLOC_CONF'),
                machine=machine(), load_before=[round(x, 2) for x in os.getloadavg()], results={})
  for name in frameworks:
    print(f'measuring {name} ...', file=sys.stderr, flush=True)
    report['results'][name] = _run_worker(name, args)
    if 'skipped' in report['results'][name]:
      print(report['results'][name]['skipped'], file=sys.stderr)
  report['load_after'] = [round(x, 2) for x in os.getloadavg()]
  for other in ('timm', 'keras'):
    for mode in ('train', 'infer', 'train_multi'):
      report[f'effnet_jax_over_{other}_{mode}'] = _ratio(report['results'], 'effnet_jax', other, mode)
  print(json.dumps(report, indent=1) if args.json else markdown(report))
  return 0


if __name__ == '__main__':
  sys.exit(main())
