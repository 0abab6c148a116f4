"""EfficientNet-B5 on ImageNet with the paper's recipe (configs/imagenet.py).

    python -m effnet_jax.main --config configs/b5.py --workdir gs://BUCKET/effnet/b5 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 83.6% / top-5 96.7% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 456; dropout from the variant table.
"""
from configs import imagenet


def get_config():
  return imagenet.get_recipe('efficientnet-b5', 456, large_model=True)
