"""EfficientNet-B0 on ImageNet with the paper's recipe (arXiv v3+ Table 2, AutoAugment).

    python -m effnet_jax.main --config configs/b0.py --workdir gs://BUCKET/effnet/b0 \
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Expected: ImageNet validation top-1 77.1% / top-5 93.3% with the EMA weights after 350 epochs
(reference-spec §4 "AutoAugment" row and §5.1). Resolution 224, dropout from the variant table, global
batch 4096 (lr 0.256), batch-norm statistics grouped as the reference does (§2.9):
per-core batch = 4096 / cores; statistics over groups of max(8, cores / 8) cores (on 32 cores:
groups of 8 = 1,024 images; on 64 or more cores always 4096 / 8 = 512 images). The authors ran bigger models on more cores (§2.1);
with less memory lower --config.batch_size (the learning rate follows it).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'efficientnet-b0'
  config.image_size = 224
  config.batch_size = 4096            # what the authors used for every model (§2.1)
  config.augment_name = 'autoaugment'
  config.num_epochs = 350.0
  config.dtype = 'bfloat16'
  config.eval_every_steps = 3128      # ~10 epochs at 4096
  config.checkpoint_every_steps = 626  # ~2 epochs at 4096
  return config
