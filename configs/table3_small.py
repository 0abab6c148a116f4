"""Base of `python -m experiments.table3 --train`: paper Table 3's networks at small scale.

Each row's network (MobileNetV1, MobileNetV2, ResNet-50/200; experiments/table3.py sets `model`) at
1/4 of its width, at 32 px, trained with the scaling study's recipe (configs/scaling_small.py: AdamW,
cosine schedule, EMA, batches of 64 `glyph_shapes` images) for 400 steps instead of 150: with their
ImageNet strides (32, so 1x1 final features at 32 px) these networks stay near chance for the first
150 steps. A row's multipliers multiply these values: width 2 trains at 1/2 width, resolution 2 at
64 px (the stored images' own size), depth 4 with 4x the blocks.
"""
from configs import scaling_small


def get_config():
  config = scaling_small.get_config()
  config.model = 'mobilenet-v2'
  config.block_strings = ''           # the families have their own layouts
  config.width = 0.25
  config.depth = None                 # each family's own depth
  config.num_train_steps = 400
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  return config
