"""The reference training recipe (reference-spec.md §2) for EfficientNet-B0 on ImageNet.

Every other config starts from this one and changes a few fields. Configs are locked: a typo such as
`--config.batchsize=...` is rejected instead of silently ignored.

    python -m effnet_jax.main --config configs/default.py --workdir /tmp/b0

Step count: `num_train_steps` wins when > 0; otherwise the run is `num_epochs` epochs of
`dataset`'s train split (rounded down to whole steps, as the reference).
"""
import ml_collections

from effnet_jax import checkpoint, optim, sharding


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # ---- Model
  config.model = 'efficientnet-b0'    # a name of effnet_jax.models.model_names(), or a family
                                      # baseline ('efficientnet', 'efficientnet-lite') with `phi`
  config.phi = ml_collections.FieldReference(None, field_type=float)  # compound-scaling exponent
  config.width = ml_collections.FieldReference(None, field_type=float)  # extra width multiplier
  config.depth = ml_collections.FieldReference(None, field_type=float)  # extra depth multiplier
  config.dropout_rate = ml_collections.FieldReference(None, field_type=float)  # None: the variant's
  config.survival_prob = ml_collections.FieldReference(0.8, field_type=float)  # stochastic depth of
                                      # the last block (§1.7); None disables stochastic depth
  config.block_strings = ml_collections.FieldReference(None, field_type=str)  # comma-separated
                                      # stages in the reference's block-string format (§1.1);
                                      # None: the family's (B0's seven)
  config.depthwise_implementation = 'auto'  # see effnet_jax.models.depthwise
  config.pointwise_implementation = 'auto'  # 1x1 convolutions and the RGB stem; see effnet_jax.models.pointwise
  config.bn_momentum = 0.99           # batch-norm moving-average momentum (TF convention, §1.8)
  config.remat = False                # recompute block activations in backprop (less memory)
  config.scan_blocks = False          # nn.scan over each stage's repeated blocks: one compiled block
                                      # per stage, 2-3x faster compile of B5-B7 (same numbers); with
                                      # remat, B7's step needs ~1/4 of the memory (README Performance);
                                      # both on in configs/b5.py-b7.py
  config.dtype = 'float32'            # compute dtype: 'float32' or 'bfloat16' (TPU); params stay f32
  config.init_from = ml_collections.FieldReference(None, field_type=str)  # a pretrained directory
                                      # (effnet_jax.convert output) to start a new run from; the
                                      # classifier is re-initialised if the class count differs
  config.freeze_backbone_steps = 0    # train only the classifier for the first N steps (fine-tuning)

  # ---- Data
  config.dataset = 'imagenet2012'     # any TFDS image-classification dataset; 'digits' is built in
  config.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir (gs:// ok);
                                      # None: TFDS default (~/tensorflow_datasets)
  config.train_split = 'train'
  config.eval_split = ml_collections.FieldReference(None, field_type=str)  # None: 'validation' if
                                      # the dataset has one, else 'test'
  config.image_size = ml_collections.FieldReference(None, field_type=int)  # None: model resolution
  config.train_crop = 'inception'     # 'inception' (random-area crop, §3.2) or 'resize' (whole image)
  config.random_flip = True           # random horizontal flip in training
  config.eval_crop_padding = 32       # eval centre crop = size/(size+padding) of the short side (§3.3)
  config.augment_name = ml_collections.FieldReference(None, field_type=str)  # None, 'autoaugment' or
                                      # 'randaugment' (§3.4-3.5)
  config.randaug_num_layers = 2
  config.randaug_magnitude = 10.0
  config.mixup_alpha = 0.0            # > 0 enables mixup with Beta(alpha, alpha) (§3.6)
  config.shuffle_buffer_size = 4096   # per-host shuffle buffer of the train stream

  # ---- Steps and batches
  config.batch_size = 2048            # GLOBAL train batch (all devices of all hosts), §2.1
  config.eval_batch_size = 1024       # GLOBAL eval batch; the last batch is padded and masked
  config.num_epochs = 350.0           # used when num_train_steps <= 0
  config.num_train_steps = -1         # > 0 overrides num_epochs
  config.log_every_steps = 100        # console / metrics.jsonl / TensorBoard train metrics
  config.eval_every_steps = 6255      # ~10 epochs at 2048 (§2.1); <= 0: evaluate at the end only
  config.checkpoint_every_steps = 1251  # ~2 epochs at 2048 (§2.1); <= 0: at the end only
  config.steps_per_loop = 1           # train steps per compiled call (lax.scan over that many
                                      # batches; the reference's iterations_per_loop). 8-16 on CPU:
                                      # 35-45% faster B0 steps (README Performance); calls never
                                      # cross a log, eval or checkpoint step
  config.seed = 0                     # model init, dropout and data order
  config.nan_policy = 'stop'          # 'stop': raise on a non-finite loss/gradients/params (the
                                      # last good checkpoint is kept); 'skip': do not apply such a
                                      # step's update, log it and go on; 'ignore': keep going
                                      # (debugging only)
  config.max_consecutive_nan_skips = 10  # 'skip' stops after this many skipped steps in a row

  # ---- Batch-norm statistics (§2.9): 'reference' (per device up to 8 devices, then groups of
  # max(8, devices // 8)), 'global', 'per_device', or an integer group size dividing the devices.
  # ---- Multi-host: distributed, coordinator_address, num_processes, process_id,
  # heartbeat_timeout_seconds, shutdown_timeout_seconds (sharding.py).
  for name, value in sharding.CONFIG_DEFAULTS.items():
    config[name] = _field(name, value)

  # ---- Optimizer, schedule, loss, EMA (§2.2-2.5; field meanings in effnet_jax/optim.py).
  for name, value in optim.CONFIG_DEFAULTS.items():
    config[name] = _field(name, value)

  # ---- Checkpoints: checkpoint_max_to_keep, checkpoint_keep_best, checkpoint_async (checkpoint.py).
  for name, value in checkpoint.CONFIG_DEFAULTS.items():
    config[name] = _field(name, value)

  config.lock()
  return config


def _field(name, value):
  """A config entry; None defaults become typed placeholders so `--config.x=...` still works."""
  if value is None:
    return ml_collections.FieldReference(None, field_type=_NONE_FIELD_TYPES.get(name, int))
  return value


# Types of the module defaults that are None (the others are ints: num_processes, process_id).
_NONE_FIELD_TYPES = {'coordinator_address': str}
