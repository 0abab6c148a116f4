"""EfficientNet-B6 on ImageNet with the paper's recipe (configs/imagenet.py).

    python -m effnet_jax.main --config configs/b6.py --workdir gs://BUCKET/effnet/b6 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 84.0% / top-5 96.8% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 528; dropout from the variant table.
"""
from configs import imagenet


def get_config():
  return imagenet.get_recipe('efficientnet-b6', 528, large_model=True)
