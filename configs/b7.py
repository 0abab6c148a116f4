"""EfficientNet-B7 on ImageNet with the paper's recipe (configs/imagenet.py).

    python -m effnet_jax.main --config configs/b7.py --workdir gs://BUCKET/effnet/b7 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 84.3% / top-5 97.0% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 600; dropout from the variant table.
"""
from configs import imagenet


def get_config():
  return imagenet.get_recipe('efficientnet-b7', 600, large_model=True)
