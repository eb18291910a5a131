"""Base training config: every experiment imports this and changes a few fields.

Sizes are in steps, so `--config.total_steps=3` shortens any experiment.
"""

import ml_collections

from geojax import models
from geojax.data import pipeline


def get_config(model: str = "se_resnet") -> ml_collections.ConfigDict:
    """Defaults shared by all experiments; `model` names the architecture."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = models.default_model_config(model)
    config.data = pipeline.default_data_config()
    # The image size is data.img_size; the trainer gives it to the model as input_size.
    config.data.img_size = config.model.input_size
    # model.dtype is the compute dtype ('bfloat16' on accelerators); parameters stay float32.

    config.batch_size = 32  # global, over all devices and processes
    config.eval_batch_size = 0  # 0: same as batch_size
    config.total_steps = 1000
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250

    config.optimizer = "adam"  # adam | adamw | sgd
    config.learning_rate = 1e-3
    config.end_lr_factor = 0.01
    config.warmup_steps = 100
    config.weight_decay = 1e-4
    config.momentum = 0.9  # sgd only
    config.grad_clip_norm = 0.0  # 0: no clipping
    config.label_smoothing = 0.0
    # > 0: keep an exponential moving average of the parameters and BatchNorm statistics
    # (decay per step); evaluation, the best checkpoint, evaluate, predict and export use it.
    config.ema_decay = 0.0
    # > 1: each step's batch runs as this many micro-batches, one after the other, with their
    # gradients averaged into one update (the large batch's gradient in 1/k of the activation
    # memory; BatchNorm sees each micro-batch's own statistics).
    config.grad_accum_steps = 1
    # A step whose loss or gradients are not finite is skipped; this many in a row stop
    # training with a message naming the steps (their batches depend only on seed and step).
    config.max_nonfinite_steps = 5

    # Stop when validation accuracy has not improved by min_delta for this many evaluations
    # (0: never stop early).
    config.early_stopping_patience = 10
    config.early_stopping_min_delta = 0.0

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.max_to_keep = 3
    config.checkpoint.async_save = True

    config.wandb = ml_collections.ConfigDict()
    config.wandb.mode = "auto"  # auto (online when logged in) | online | offline | disabled
    config.wandb.project = "geojax"
    config.wandb.entity = ""
    config.wandb.name = ""  # "": the workdir's name

    # "START:END": a jax.profiler trace of steps START..END-1 in WORKDIR/profile (TensorBoard's
    # profile plugin reads it: tensorboard --logdir WORKDIR); "" for none.
    config.profile_steps = ""

    # Multi-host: enabled (or JAX_COORDINATOR_ADDRESS in the environment) calls
    # jax.distributed.initialize; unset fields are auto-detected by JAX.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.enabled = False
    config.distributed.coordinator_address = ""
    config.distributed.num_processes = ml_collections.config_dict.placeholder(int)
    config.distributed.process_id = ml_collections.config_dict.placeholder(int)
    return config


# The seed's dataset: 1000 images per class, 70% of them for training.
SEED_TRAIN_IMAGES = 7000


def steps_for_epochs(epochs: int, batch_size: int, train_images: int = SEED_TRAIN_IMAGES) -> int:
    """Steps that show the model `epochs` passes over the seed's training set."""
    return epochs * -(-train_images // batch_size)


def epoch_schedule(config: ml_collections.ConfigDict, epochs: int) -> None:
    """Sets total steps for `epochs` seed epochs; evaluates and checkpoints once an epoch."""
    per_epoch = steps_for_epochs(1, config.batch_size)
    config.total_steps = epochs * per_epoch
    config.eval_every_steps = per_epoch
    config.checkpoint_every_steps = per_epoch
    config.log_every_steps = 50
    config.warmup_steps = per_epoch


def transfer_config(model: str) -> ml_collections.ConfigDict:
    """A Keras-architecture backbone + the seed's 512-256-N head (BatchNorm), fine-tuned.

    ImageNet weights come from a local Keras weights file:
      --config.model.pretrained=/path/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5
    and with them the seed's partial fine-tuning:
      --config.model.freeze_backbone=True --config.model.trainable_blocks=2
    """
    config = get_config(model)
    config.learning_rate = 1e-4
    epoch_schedule(config, 30)
    return config
