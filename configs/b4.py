"""EfficientNet-B4 on ImageNet with the paper's recipe (configs/imagenet.py).

    python -m effnet_jax.main --config configs/b4.py --workdir gs://BUCKET/effnet/b4 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 82.9% / top-5 96.4% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 380; dropout from the variant table.
"""
from configs import imagenet


def get_config():
  return imagenet.get_recipe('efficientnet-b4', 380)
