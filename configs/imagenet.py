"""The paper's ImageNet recipe (arXiv v3+ Table 2) for any EfficientNet: what b0.py … b7.py and phi.py share.

Over configs/default.py (the reference's main.py defaults): a global batch of 4096 for every model, as
the authors trained them (learning rate 0.016 × 4096/256 = 0.256, reference-spec §2.1); AutoAugment v0;
350 epochs; bfloat16 compute; evaluation every ~10 and checkpoints every ~2 epochs. Batch-norm
statistics are grouped as the reference does (§2.9): per-core batch = 4096 / cores, statistics over
groups of max(8, cores / 8) cores (32 cores: groups of 8 = 1,024 images; 64 or more cores: always
512 images). With less memory lower --config.batch_size (the learning rate follows it).

B5 and larger (`large_model=True`) recompute block activations in the backward pass (remat) and run each
stage's repeated blocks as one nn.scan (scan_blocks): together they cut B7's train step to a quarter of
the memory and halve its compile time (README, Performance). Pretrained weights
(config.init_from) load into either layout; --config.scan_blocks=False gives the plain one.
"""
from configs import default

GLOBAL_BATCH_SIZE = 4096
LARGE_MODEL_FROM_WIDTH = 1.6  # B5 (width 1.6) and larger: remat + scan_blocks


def get_recipe(model: str, image_size: int, *, phi: float | None = None, large_model: bool = False):
  config = default.get_config()
  config.model = model
  config.phi = phi
  config.image_size = image_size
  config.batch_size = GLOBAL_BATCH_SIZE
  config.augment_name = 'autoaugment'
  config.num_epochs = 350.0
  config.dtype = 'bfloat16'
  config.eval_every_steps = 3128      # ~10 epochs at 4096
  config.checkpoint_every_steps = 626  # ~2 epochs at 4096
  config.remat = large_model
  config.scan_blocks = large_model
  return config
