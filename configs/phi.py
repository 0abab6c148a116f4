"""A compound-scaled EfficientNet for any φ: depth 1.2^φ, width 1.1^φ, resolution 1.15^φ × 224.

    python -m effnet_jax.main --config configs/phi.py:2.5 --workdir /tmp/phi2.5

The network comes from the scaling formula applied to B0 (create_model('efficientnet', phi=φ)), not
from the rounded published table, so φ=1 is close to but not exactly B1. φ=0 is B0. Recipe as for
configs/b0.py..b7.py (configs/imagenet.py: 4096 images, AutoAugment, 350 epochs); expected accuracy lies between the
published models of similar FLOPs (reference-spec §5.1), e.g. about 77% for φ=0.
"""
from configs import imagenet
from effnet_jax import models


def get_config(arg: str = '0'):
  try:
    phi = float(arg)
  except ValueError:
    raise ValueError(f'configs/phi.py takes a number, e.g. configs/phi.py:2.5; got {arg!r}.') from None
  spec = models.resolve_model_spec('efficientnet', phi=phi)
  return imagenet.get_recipe('efficientnet', spec.resolution, phi=phi,
                             large_model=spec.width >= imagenet.LARGE_MODEL_FROM_WIDTH)
