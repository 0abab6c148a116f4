"""Base model of the small-scale scaling study: a tiny EfficientNet on `glyph_shapes`, 150 steps.

    python -m effnet_jax.main --config configs/scaling_small.py --workdir /tmp/scaling_base
    python -m experiments.scaling_study --config configs/scaling_small.py --workdir /tmp/study

B0's seven stages at width 0.25 (8..80 channels, head 320) and depth 0.25 (one block per stage) at
32 px, trained 150 steps of 64 images (~2 epochs of the 5,000 procedural 64x64 `glyph_shapes`
images, effnet_jax/data/glyph_shapes.py) with AdamW and a cosine schedule. The study scales this
network's depth, width and input size (experiments/scaling_study.py): `depth`, `width` and
`image_size` below are the base values that the multipliers multiply. Every scaled point trains with
the same recipe and steps, as in the paper's Figure 3. Measured: 23.4% top-1 (EMA) on the 1,000
test images, seed 0 (experiments/results/scaling.csv; the other points are in experiments/README.md).
"""
from configs import default

# B0's seven stages with stride 1 in stages 4 and 6: total stride 8, so a 32-px input ends in 4x4
# features (not 1x1) and multiply-adds grow with the pixels for every multiple of 8 px.
BLOCKS = (
    'r1_k3_s11_e1_i32_o16_se0.25',
    'r2_k3_s22_e6_i16_o24_se0.25',
    'r2_k5_s22_e6_i24_o40_se0.25',
    'r3_k3_s11_e6_i40_o80_se0.25',
    'r3_k5_s11_e6_i80_o112_se0.25',
    'r4_k5_s11_e6_i112_o192_se0.25',
    'r1_k3_s11_e6_i192_o320_se0.25',
)


def get_config():
  config = default.get_config()
  config.model = 'efficientnet-b0'
  config.width = 0.25                 # 8..80 channels per stage (min 8), head 320
  config.depth = 0.25                 # one block per stage
  config.image_size = 32              # the stored images are 64 px: r = 2 sees every pixel
  config.block_strings = ','.join(BLOCKS)
  config.dropout_rate = 0.1
  config.survival_prob = None         # no stochastic depth in a 150-step run
  config.bn_momentum = 0.9            # moving statistics settle within the short run
  config.dataset = 'glyph_shapes'
  config.data_dir = '~/tensorflow_datasets'
  config.train_crop = 'resize'        # whole image: a random-area crop could cut the shape off
  config.random_flip = True           # shapes and glyphs are flip-invariant classes
  config.eval_crop_padding = 0
  config.batch_size = 64
  config.eval_batch_size = 200
  config.num_train_steps = 150
  config.log_every_steps = 25
  config.eval_every_steps = 0         # evaluate once, at the end (1,000 test images)
  config.checkpoint_every_steps = 50
  config.bn_group = 'global'
  config.optimizer = 'adamw'
  config.adamw_weight_decay = 1e-4
  config.weight_decay = 0.0
  config.base_learning_rate = 0.032   # peak lr 0.008 at batch 64
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.25
  config.moving_average_decay = 0.99
  config.shuffle_buffer_size = 5000
  return config
