"""What a training config may hold: the checks that fail before any work, naming the field,
and the model a config describes (input size and BatchNorm axis resolved for the trainer)."""

import ml_collections

from geojax import models
from geojax.core.errors import UserError
from geojax.data import pipeline

DATA_AXIS = "data"
"""The device mesh's one axis: the global batch is split over it, gradients averaged over it."""

OPTIMIZERS = ("adam", "adamw", "sgd")
WANDB_MODES = ("auto", "online", "offline", "disabled")


class ConfigError(UserError, ValueError):
    """A config value the trainer cannot use; the message names the field."""


class NonFiniteError(UserError, RuntimeError):
    """Training stopped after `max_nonfinite_steps` steps in a row had a non-finite loss or
    gradient; the message names the steps and how to regenerate their batches."""


def nonfinite_message(config: ml_collections.ConfigDict, first: int, last: int) -> str:
    """Why training stopped, and how to get the batches of steps first..last back (a batch
    depends only on the seed and the step)."""
    if config.data.source == "device":
        how = (f"geojax.data.device.batches.make_batch(config.data, {config.seed}, step, "
               f"jnp.arange({config.batch_size}))")
    else:
        how = (f"next(geojax.data.train_batches(config.data, {config.batch_size}, "
               f"seed={config.seed}, start_step=step))")
    return (f"the loss or gradients were not finite for {last - first + 1} steps in a row "
            f"(steps {first}..{last}; each was skipped, no update applied). The batch of a "
            f"step depends only on (seed, step): with config = "
            f"geojax.training.workdir.read_config(WORKDIR), "
            f"{how} is the batch of `step` (the first bad one is step {first}). Lower the "
            f"learning rate or set grad_clip_norm, then rerun: training resumes from the last "
            f"checkpoint.")


def profile_window(spec: str) -> tuple[int, int] | None:
    """config.profile_steps "START:END" as (START, END), None for ""; anything else fails."""
    if not spec:
        return None
    try:
        start, end = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ConfigError(f"profile_steps={spec!r}: expected 'START:END', e.g. '100:105'") from None
    if not 0 <= start < end:
        raise ConfigError(f"profile_steps={spec!r}: needs 0 <= START < END")
    return start, end


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails before any work, naming the field, on values the trainer cannot use."""
    problems = []
    if config.optimizer not in OPTIMIZERS:
        problems.append(f"optimizer={config.optimizer!r} is not one of {OPTIMIZERS}")
    if config.wandb.mode not in WANDB_MODES:
        problems.append(f"wandb.mode={config.wandb.mode!r} is not one of {WANDB_MODES}")
    for field in ("batch_size", "total_steps", "log_every_steps", "eval_every_steps",
                  "checkpoint_every_steps"):
        if config[field] < 1:
            problems.append(f"{field}={config[field]} must be >= 1")
    try:
        profile_window(config.profile_steps)
    except ConfigError as err:
        problems.append(str(err))
    if not 0.0 <= config.ema_decay < 1.0:
        problems.append(f"ema_decay={config.ema_decay} must be in [0, 1) (0: no EMA)")
    if config.get("grad_accum_steps", 1) < 1:
        problems.append(f"grad_accum_steps={config.grad_accum_steps} must be >= 1 (1: none)")
    if config.max_nonfinite_steps < 1:
        problems.append(f"max_nonfinite_steps={config.max_nonfinite_steps} must be >= 1")
    if not config.learning_rate > 0:
        problems.append(f"learning_rate={config.learning_rate} must be > 0")
    for field in ("warmup_steps", "weight_decay", "label_smoothing", "early_stopping_patience",
                  "eval_batch_size", "end_lr_factor"):
        if config[field] < 0:
            problems.append(f"{field}={config[field]} must be >= 0")
    if config.checkpoint.max_to_keep < 1:
        problems.append(f"checkpoint.max_to_keep={config.checkpoint.max_to_keep} must be >= 1")
    try:
        pipeline.check_data_config(config.data)
    except (ValueError, OSError) as err:
        problems.append(str(err))
    try:
        create_model(config)  # the Flax module only: no parameters, nothing compiled
    except (ValueError, TypeError) as err:
        problems.append(f"model: {err}")
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.model` for this trainer: input size `data.img_size`, BatchNorm synchronised
    over the 'data' mesh axis."""
    resolved = ml_collections.ConfigDict(config.model.to_dict())
    resolved.input_size = config.data.img_size
    resolved.bn_axis_name = DATA_AXIS
    return resolved


def create_model(config: ml_collections.ConfigDict) -> models.Classifier:
    """The configured model (see `model_config`)."""
    return models.create_model(model_config(config))
