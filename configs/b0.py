"""EfficientNet-B0 on ImageNet with the paper's recipe (configs/imagenet.py).

    python -m effnet_jax.main --config configs/b0.py --workdir gs://BUCKET/effnet/b0 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 77.1% / top-5 93.3% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 224; dropout from the variant table.
"""
from configs import imagenet


def get_config():
  return imagenet.get_recipe('efficientnet-b0', 224)
