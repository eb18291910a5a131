"""Train a shape classifier: data-parallel steps over a device mesh, checkpoints, metrics.

The algorithm, top to bottom: create the model and the optimizer (warmup + cosine learning
rate), initialise or restore the train state, then loop: one jitted data-parallel train step
per batch, evaluate on the validation split, checkpoint, stop early when validation accuracy
stops improving; finally evaluate the best checkpoint on the test split.

The train step is written once as per-device code (`jax.shard_map` over the mesh axis 'data'
under `jax.jit`): each device takes its slice of the global batch, gradients are averaged
with `lax.pmean` and BatchNorm statistics are global-batch (the model's `bn_axis_name`), so N
devices or N hosts compute what one device would on the whole batch.
"""

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, cast

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metrics as clu_metrics
from etils import epath
from flax import linen as nn
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from geojax import CLASSES, NO_SHAPE, NUM_CLASSES, metrics, models, throughput
from geojax.data import pipeline

DATA_AXIS = "data"
CONFIG_FILENAME = "config.json"
HISTORY_FILENAME = "history.jsonl"
CALIBRATION_FILENAME = "calibration.json"


class CheckpointError(RuntimeError):
    """A checkpoint in the workdir is missing or cannot be read."""


class ConfigError(ValueError):
    """A config value the trainer cannot use; the message names the field."""


class NonFiniteError(RuntimeError):
    """Training stopped after `max_nonfinite_steps` steps in a row had a non-finite loss or
    gradient; the message names the steps and how to regenerate their batches."""


def nonfinite_message(config: ml_collections.ConfigDict, first: int, last: int) -> str:
    """Why training stopped, and how to get the batches of steps first..last back (a batch
    depends only on the seed and the step)."""
    if config.data.source == "device":
        how = (f"geojax.data.device.make_batch(config.data, {config.seed}, step, "
               f"jnp.arange({config.batch_size}))")
    else:
        how = (f"next(geojax.data.train_batches(config.data, {config.batch_size}, "
               f"seed={config.seed}, start_step=step))")
    return (f"the loss or gradients were not finite for {last - first + 1} steps in a row "
            f"(steps {first}..{last}; each was skipped, no update applied). The batch of a "
            f"step depends only on (seed, step): with config = train.read_config(WORKDIR), "
            f"{how} is the batch of `step` (the first bad one is step {first}). Lower the "
            f"learning rate or set grad_clip_norm, then rerun: training resumes from the last "
            f"checkpoint.")


OPTIMIZERS = ("adam", "adamw", "sgd")
WANDB_MODES = ("auto", "online", "offline", "disabled")


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


# ---------------------------------------------------------------------------------------------
# Distributed set-up and the device mesh
# ---------------------------------------------------------------------------------------------


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Joins the other processes of a multi-host run, when the config or environment says so.

    Must run before any JAX computation. `JAX_COORDINATOR_ADDRESS` in the environment is
    enough; with `distributed.enabled` and fields left unset, JAX detects them from the cluster
    (SLURM, Open MPI, Kubernetes, Cloud TPU).
    """
    dist = config.distributed
    if not (dist.enabled or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(
        coordinator_address=dist.coordinator_address or None,
        num_processes=dist.num_processes,
        process_id=dist.process_id,
    )


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh, axis 'data', over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


# ---------------------------------------------------------------------------------------------
# Model, learning-rate schedule, optimizer
# ---------------------------------------------------------------------------------------------


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


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine decay to `end_lr_factor` of it."""
    warmup_steps = min(config.warmup_steps, max(config.total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(config.total_steps, warmup_steps + 1),
        end_value=config.learning_rate * config.end_lr_factor,
    )


def _decay_mask(params: Any) -> Any:
    """Weight decay applies to kernels (the seed's L2 on conv/dense), not biases or BN."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(
    config: ml_collections.ConfigDict,
    learning_rate_fn: optax.Schedule,
    model: models.Classifier,
) -> optax.GradientTransformation:
    """Adam (L2 weight decay, as the seed), AdamW (decoupled) or SGD with momentum.

    Frozen backbone layers (the model's `freeze_backbone`) get zero updates.
    """
    name = config.optimizer
    decay = config.weight_decay
    if name not in OPTIMIZERS:
        raise ConfigError(f"config.optimizer={name!r}: expected one of {OPTIMIZERS}.")
    if name == "adam":
        tx = optax.chain(
            optax.add_decayed_weights(decay, _decay_mask), optax.adam(learning_rate_fn)
        )
    elif name == "adamw":
        tx = optax.adamw(learning_rate_fn, weight_decay=decay, mask=_decay_mask)
    else:
        tx = optax.chain(
            optax.add_decayed_weights(decay, _decay_mask),
            optax.sgd(learning_rate_fn, momentum=config.momentum, nesterov=True),
        )
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return models.freeze_optimizer(tx, model)


# ---------------------------------------------------------------------------------------------
# Train state
# ---------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; the data position is `step` (batches depend on it alone)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    # config.ema_decay > 0: the moving averages {'params', 'batch_stats'} that evaluation,
    # the best checkpoint and every consumer use (`for_inference`); {} when off.
    ema: Any = flax.struct.field(default_factory=dict)

    def for_inference(self) -> "TrainState":
        """This state with the EMA weights in place of the trained ones, when EMA is on."""
        if not self.ema:
            return self
        return dataclasses.replace(self, params=self.ema["params"],
                                   batch_stats=self.ema["batch_stats"])


def create_train_state(
    rng: jax.Array,
    config: ml_collections.ConfigDict,
    model: models.Classifier,
    tx: optax.GradientTransformation,
) -> TrainState:
    """Initialises parameters (float32; pretrained backbone weights when the model config
    names a file), BatchNorm statistics and the optimizer state."""
    init_rng, train_rng = jax.random.split(rng)
    variables = models.init_variables(model, model_config(config), init_rng)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=train_rng,
        # A copy: the train step donates the state, and no buffer may be donated twice.
        ema=(jax.tree.map(jnp.array, {"params": params, "batch_stats": batch_stats})
             if config.get("ema_decay", 0.0) > 0 else {}),
    )


# ---------------------------------------------------------------------------------------------
# Steps (per-device code; see `make_parallel_steps`)
# ---------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    # clu declares a metric by calling from_output, which mypy rejects as an annotation
    loss: clu_metrics.Average.from_output("loss")  # type: ignore[valid-type]
    accuracy: clu_metrics.Average.from_output("accuracy")  # type: ignore[valid-type]
    # The fraction of steps skipped because their loss or gradients were not finite.
    nonfinite: clu_metrics.Average.from_output("nonfinite")  # type: ignore[valid-type]


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")  # type: ignore[valid-type]  # see TrainMetrics
    accuracy: clu_metrics.Accuracy


def cross_entropy_loss(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels; a
    shape-free image (label NO_SHAPE) is trained toward the uniform distribution (outlier
    exposure: "no shape" must not come out as a confident class)."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    targets = jnp.where((labels == NO_SHAPE)[..., None], 1.0 / num_classes, targets)
    return optax.softmax_cross_entropy(logits, targets)


def shape_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Accuracy over the images that hold a shape (NO_SHAPE images have no class to get right)."""
    has_shape = labels != NO_SHAPE
    correct = (jnp.argmax(logits, -1) == labels) & has_shape
    return correct.sum() / jnp.maximum(has_shape.sum(), 1)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    label_smoothing: float,
    ema_decay: float = 0.0,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, TrainMetrics]:
    """One optimizer step on this device's slice of the global batch (and, with `ema_decay`,
    one step of the parameters' and BatchNorm statistics' moving averages).

    With `grad_accum_steps` = k > 1 the slice is split into k equal micro-batches, run one
    after the other (`lax.scan`: one micro-batch's activations in memory at a time); their
    gradients are averaged into one update, the large batch's gradient. BatchNorm normalises
    each micro-batch by its own statistics (as on k devices) and its running averages take k
    updates."""
    # Dropout differs per device and per step, yet is fixed by (rng, step, device).
    dropout_rng = jax.random.fold_in(
        jax.random.fold_in(state.rng, state.step), lax.axis_index(DATA_AXIS)
    )
    images = batch["image"].astype(jnp.float32) / 255.0
    labels = batch["label"]

    def loss_fn(params, batch_stats, images, labels, rng):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            rngs={"dropout": rng},
            mutable=["batch_stats"],
        )
        loss = cross_entropy_loss(logits, labels, label_smoothing)
        return loss.mean(), (loss, logits, updates.get("batch_stats", {}))

    # Differentiate this device's loss alone (params marked device-varying), then average:
    # the mean of equal-sized shard means is the global-batch gradient.
    local_params = lax.pcast(state.params, DATA_AXIS, to="varying")
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        grads, (loss, logits, batch_stats) = grad_fn(local_params, state.batch_stats, images,
                                                     labels, dropout_rng)
    else:
        k = grad_accum_steps
        micro = (images.reshape(k, -1, *images.shape[1:]), labels.reshape(k, -1),
                 jax.random.split(dropout_rng, k))

        def accumulate(carry, inputs):
            total, stats = carry
            g, (micro_loss, micro_logits, stats) = grad_fn(local_params, stats, *inputs)
            return (jax.tree.map(jnp.add, total, g), stats), (micro_loss, micro_logits)

        first = jax.tree.map(lambda a: a[0], micro)
        g0, (loss0, logits0, stats0) = grad_fn(local_params, state.batch_stats, *first)
        rest = jax.tree.map(lambda a: a[1:], micro)
        (total, batch_stats), (losses, logits_rest) = lax.scan(accumulate, (g0, stats0), rest)
        grads = jax.tree.map(lambda g: g / k, total)
        loss = jnp.concatenate([loss0, losses.reshape(-1)])
        logits = jnp.concatenate([logits0, logits_rest.reshape(-1, logits0.shape[-1])])
    grads = lax.pmean(grads, DATA_AXIS)
    mean_loss = lax.pmean(loss.mean(), DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    # A non-finite loss or gradient (the same on every device: both are global means) skips
    # the update: parameters, BatchNorm statistics and optimizer state stay as they were.
    finite = jnp.isfinite(mean_loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))

    def keep_if_not_finite(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_params = keep_if_not_finite(optax.apply_updates(state.params, updates), state.params)
    new_batch_stats = keep_if_not_finite(batch_stats, state.batch_stats)
    ema = state.ema
    if ema_decay > 0:
        ema = jax.tree.map(lambda average, value: ema_decay * average + (1 - ema_decay) * value,
                           ema, {"params": new_params, "batch_stats": new_batch_stats})
    new_state = dataclasses.replace(  # flax's state.replace, which its typing lacks
        state,
        step=state.step + 1,
        params=new_params,
        batch_stats=new_batch_stats,
        opt_state=keep_if_not_finite(opt_state, state.opt_state),
        ema=ema,
    )
    # Global-batch means (equal shards); clu averages them over the steps between logs.
    step_metrics = TrainMetrics.single_from_model_output(
        loss=mean_loss,
        accuracy=lax.pmean(shape_accuracy(logits, labels), DATA_AXIS),
        nonfinite=1.0 - finite.astype(jnp.float32),
    )
    return new_state, step_metrics


def predict_step(state: TrainState, images: jax.Array, *, model: nn.Module) -> jax.Array:
    """Float32 logits for this device's images (from the EMA weights when EMA is on)."""
    state = state.for_inference()
    # flax types apply()'s result as maybe (output, variables): that is only with `mutable`
    logits = cast(jax.Array, model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        images.astype(jnp.float32) / 255.0,
        train=False,
    ))
    return logits.astype(jnp.float32)


def device_data_train_step(
    state: TrainState, *, make_batch: Callable[[jax.Array], Mapping[str, jax.Array]], **kwargs
) -> tuple[TrainState, TrainMetrics]:
    """`train_step` on this device's slice of the batch of `state.step`, drawn right here
    (data.source='device': `make_batch` is `geojax.data.device.local_batch` bound to the config)."""
    return train_step(state, make_batch(state.step), **kwargs)


def device_batch_maker(config: ml_collections.ConfigDict) -> Callable[[jax.Array], Any]:
    """Per-device batch of a step for data.source='device' (see `geojax.data.device`)."""
    from geojax.data import device

    return functools.partial(device.local_batch, config.data, batch_size=config.batch_size,
                             seed=config.seed, axis_name=DATA_AXIS)


def make_parallel_steps(
    mesh: Mesh,
    model: nn.Module,
    tx: optax.GradientTransformation,
    label_smoothing: float,
    make_batch: Callable[[jax.Array], Any] | None = None,
    ema_decay: float = 0.0,
    grad_accum_steps: int = 1,
) -> tuple[Callable, Callable]:
    """Jitted data-parallel train and predict steps: state replicated, batch split on 'data'.

    The train step is `step(state, batch)`, or `step(state)` with `make_batch` (the batch is
    then drawn on the devices from `state.step`: `device_data_train_step`). It donates the
    incoming state's buffers.
    """
    step_fn = functools.partial(train_step, model=model, tx=tx, label_smoothing=label_smoothing,
                                ema_decay=ema_decay, grad_accum_steps=grad_accum_steps)
    in_specs: tuple = (P(), P(DATA_AXIS))
    if make_batch is not None:
        step_fn = functools.partial(device_data_train_step, make_batch=make_batch, model=model,
                                    tx=tx, label_smoothing=label_smoothing, ema_decay=ema_decay,
                                    grad_accum_steps=grad_accum_steps)
        in_specs = (P(),)
    parallel_train = jax.shard_map(
        step_fn, mesh=mesh, in_specs=in_specs, out_specs=(P(), P())
    )
    parallel_predict = jax.shard_map(
        functools.partial(predict_step, model=model),
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
    )
    return jax.jit(parallel_train, donate_argnums=0), jax.jit(parallel_predict)


class Training(NamedTuple):
    """What a training loop needs: built by `create_training`."""

    mesh: Mesh
    model: nn.Module
    tx: optax.GradientTransformation
    learning_rate_fn: optax.Schedule
    state: TrainState  # initial, replicated over the mesh
    train_step: Callable  # step(state, batch), or step(state) with device data
    predict_step: Callable


def create_training(
    config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Training:
    """The mesh over `devices` (default: all), the model, optimizer, initial state (from
    config.seed, put on every device) and the jitted data-parallel steps of `config`; with
    data.source='device' the train step draws its own batch (`device_batch_maker`)."""
    mesh = create_mesh(devices)
    accum = int(config.get("grad_accum_steps", 1))
    if config.batch_size % (mesh.devices.size * accum):
        raise ConfigError(
            f"config.batch_size={config.batch_size} must be divisible by the "
            f"{mesh.devices.size} devices of the mesh times grad_accum_steps={accum}."
        )
    model = create_model(config)
    learning_rate_fn = create_learning_rate_fn(config)
    tx = create_optimizer(config, learning_rate_fn, model)
    state = create_train_state(jax.random.PRNGKey(config.seed), config, model, tx)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    on_device = config.data.source == "device"
    train_fn, predict_fn = make_parallel_steps(
        mesh, model, tx, config.label_smoothing,
        make_batch=device_batch_maker(config) if on_device else None,
        ema_decay=float(config.get("ema_decay", 0.0)),
        grad_accum_steps=accum,
    )
    return Training(mesh, model, tx, learning_rate_fn, state, train_fn, predict_fn)


def _peak_flops(mesh: Mesh, dtype: str) -> float | None:
    """The mesh's devices' peak FLOP/s together at the compute dtype (None: unknown device)."""
    peak = throughput.peak_flops(mesh.devices.flat[0], dtype)
    return peak * mesh.devices.size if peak else None


def dry_run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Everything before the first step, without running it: validates the config, builds the
    model and compiles the train step for the configured devices. Returns the parameter count,
    XLA's FLOPs per step and per image (a device's program over its share of the batch; with
    data.source='device' drawing the batch is included) and the compiled step's memory per
    device. Writes nothing."""
    check_config(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = model_config(config)
    training = create_training(config)
    devices = training.mesh.devices.size
    args: tuple = (training.state,)
    if config.data.source != "device":
        sharding = NamedSharding(training.mesh, P(DATA_AXIS))
        size = int(config.data.img_size)
        args += ({"image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.uint8,
                                                sharding=sharding),
                  "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32,
                                                sharding=sharding)},)
    compiled = training.train_step.lower(*args).compile()
    flops = throughput.compiled_flops(compiled)
    memory = compiled.memory_analysis()
    per_device = config.batch_size // devices
    return {
        "model": config.model.name,
        "input_size": int(config.data.img_size),
        "parameters": int(sum(x.size for x in jax.tree.leaves(training.state.params))),
        "devices": devices,
        "batch_size": int(config.batch_size),
        "flops_per_step_per_device": flops,
        "flops_per_image": flops / per_device,
        "memory_per_device_bytes": {
            "arguments": int(memory.argument_size_in_bytes),
            "outputs": int(memory.output_size_in_bytes),
            "temporaries": int(memory.temp_size_in_bytes),
            "code": int(memory.generated_code_size_in_bytes),
        } if memory is not None else {},
    }


# ---------------------------------------------------------------------------------------------
# Feeding global arrays
# ---------------------------------------------------------------------------------------------


def global_batches(
    local_batches: Iterator[dict[str, np.ndarray]], mesh: Mesh
) -> Iterator[dict[str, jax.Array]]:
    """Assembles each process's local batch into one global array split over 'data'."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    for batch in local_batches:
        yield {
            k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()
        }


def predict(
    predict_fn: Callable,
    state: TrainState,
    images: np.ndarray,
    mesh: Mesh,
    batch_size: int,
) -> np.ndarray:
    """Logits [N, classes] for a host array that every process holds in full."""
    num_devices = mesh.devices.size
    batch_size = -(-batch_size // num_devices) * num_devices
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        valid = len(chunk)
        if valid < batch_size:
            pad = np.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        array = jax.make_array_from_callback(chunk.shape, sharding, chunk.__getitem__)
        logits = multihost_utils.process_allgather(predict_fn(state, array), tiled=True)
        outputs.append(np.asarray(logits)[:valid])
    return np.concatenate(outputs) if outputs else np.zeros((0, NUM_CLASSES), np.float32)


def evaluate_split(
    predict_fn: Callable,
    state: TrainState,
    split: Mapping[str, np.ndarray],
    mesh: Mesh,
    batch_size: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy (clu metrics) on a whole split, and the logits."""
    logits = predict(predict_fn, state, split["image"], mesh, batch_size)
    labels = np.asarray(split["label"], np.int32)
    collection = EvalMetrics.single_from_model_output(
        logits=jnp.asarray(logits),
        labels=jnp.asarray(labels),
        loss=cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels)),
    )
    return {k: float(v) for k, v in collection.compute().items()}, logits


def early_stopping(
    progress: Mapping[str, Any],
    step: int,
    accuracy: float,
    patience_steps: int,
    min_delta: float = 0.0,
) -> dict[str, Any]:
    """The early-stopping state after validation accuracy `accuracy` at `step`.

    Stops once `patience_steps` steps have passed since the best accuracy (better means more
    than `min_delta` above it); `patience_steps` 0 never stops.
    """
    progress = dict(progress)
    if accuracy > progress["best_accuracy"] + min_delta:
        progress.update(best_accuracy=accuracy, best_step=step)
    progress["stopped_early"] = (
        patience_steps > 0 and step - progress["best_step"] >= patience_steps
    )
    return progress


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def create_checkpoint_manager(
    workdir: str, config: ml_collections.ConfigDict, *, read_only: bool = False
) -> ocp.CheckpointManager:
    """Keeps the latest `max_to_keep` checkpoints and the best by validation accuracy."""
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda m: m["val_accuracy"],
        best_mode="max",
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=config.checkpoint.max_to_keep),
                policies.BestN(
                    get_metric_fn=lambda m: m["val_accuracy"],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        ),
        enable_async_checkpointing=config.checkpoint.async_save,
        read_only=read_only,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
    )
    directory = epath.Path(workdir).absolute() / "checkpoints"
    try:
        return ocp.CheckpointManager(directory, item_names=("state", "progress"), options=options)
    except ValueError as e:  # json.JSONDecodeError: a checkpoint's metadata is unreadable
        raise CheckpointError(
            f"The checkpoints in {directory} are corrupt ({e}): delete the damaged step "
            "folders (or the whole folder) and rerun."
        ) from e


def save_checkpoint(
    manager: ocp.CheckpointManager,
    state: TrainState,
    progress: dict[str, Any],
    val_metrics: dict[str, float] | None,
) -> None:
    """Starts an (async) save of the state; `val_metrics` ranks it for 'best'."""
    step = int(state.step)
    if step in manager.all_steps():
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
            progress=ocp.args.JsonSave(progress),
        ),
        metrics={"val_" + k: v for k, v in val_metrics.items()} if val_metrics else None,
    )


def restore_checkpoint(
    manager: ocp.CheckpointManager, state: TrainState, step: int
) -> tuple[TrainState, dict[str, Any]]:
    """Restores `step` into arrays shaped and sharded like `state`; clear error if unreadable."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(state))

    def restore(item: dict[str, Any]) -> Any:
        return manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(item), progress=ocp.args.JsonRestore()))

    try:
        try:
            restored = restore(target)
        except ValueError:
            if state.ema:
                raise
            # A checkpoint from before EMA existed has no 'ema' entry at all.
            restored = restore({k: v for k, v in target.items() if k != "ema"})
    except Exception as e:  # orbax raises many types; the user needs one message
        raise CheckpointError(
            f"Checkpoint {manager.directory}/{step} cannot be read ({type(e).__name__}: {e}). "
            "It is corrupt or from a different model/config: delete that step directory to "
            "resume from an earlier one, or use a fresh --workdir."
        ) from e
    fields = {"ema": {}, **restored["state"]}
    return flax.serialization.from_state_dict(state, fields), dict(restored["progress"])


def load_for_inference(
    config: ml_collections.ConfigDict, workdir: str, checkpoint: str = "best"
) -> tuple[TrainState, Callable, Mesh, int]:
    """The state of WORKDIR's 'best', 'latest' or numbered checkpoint, and a predict function."""
    manager = create_checkpoint_manager(workdir, config, read_only=True)
    steps = manager.all_steps()
    if not steps:
        raise CheckpointError(
            f"No checkpoint in {manager.directory}: train first "
            f"(python -m geojax.main --config ... --workdir {workdir})."
        )
    if checkpoint == "best":
        step = manager.best_step()
    elif checkpoint == "latest":
        step = manager.latest_step()
    elif checkpoint.isdigit() and int(checkpoint) in steps:
        step = int(checkpoint)
    else:
        raise CheckpointError(
            f"checkpoint={checkpoint!r}: expected 'best', 'latest' or one of the saved steps "
            f"{sorted(steps)} in {manager.directory}."
        )
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.pretrained = None  # the checkpoint holds every weight
    mesh = create_mesh()
    model = create_model(config)
    tx = create_optimizer(config, create_learning_rate_fn(config), model)
    abstract_state = jax.eval_shape(
        functools.partial(create_train_state, jax.random.PRNGKey(config.seed), config, model, tx)
    )
    replicated = NamedSharding(mesh, P())
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_state
    )
    state, _ = restore_checkpoint(manager, abstract_state, step)
    manager.close()
    _, predict_fn = make_parallel_steps(mesh, model, tx, config.label_smoothing)
    return state, predict_fn, mesh, step


# ---------------------------------------------------------------------------------------------
# Side effects: workdir files, writers, W&B
# ---------------------------------------------------------------------------------------------


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config the run uses to WORKDIR/config.json."""
    path = epath.Path(workdir) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = epath.Path(workdir) / CONFIG_FILENAME
    if not path.exists():
        raise CheckpointError(f"{path} not found: is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def append_history(workdir: str, step: int, split: str, values: Mapping[str, float]) -> None:
    """One JSON line per logged point; the training-curves plot reads it."""
    with open(os.path.join(workdir, HISTORY_FILENAME), "a") as f:
        f.write(json.dumps({"step": step, "split": split, **values}) + "\n")


def read_history(workdir: str) -> list[dict[str, Any]]:
    """Logged points, the last write winning where a resumed run logged a step twice."""
    path = os.path.join(workdir, HISTORY_FILENAME)
    if not os.path.exists(path):
        return []
    points: dict[tuple[int, str], dict[str, Any]] = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                point = json.loads(line)
                points[(point["step"], point["split"])] = point
            except (ValueError, KeyError, TypeError):
                # A run killed mid-write leaves a truncated last line: skip what is unreadable.
                logging.warning("%s line %d is not a logged point; skipped", path, number)
    return [points[k] for k in sorted(points)]


def write_calibration(workdir: str, step: int, temperature: float,
                      values: Mapping[str, float]) -> None:
    """Records the temperature fitted for checkpoint `step` (with its ECE before and after) in
    WORKDIR/calibration.json, beside the others calibrated there."""
    path = epath.Path(workdir) / CALIBRATION_FILENAME
    entries = json.loads(path.read_text()) if path.exists() else {}
    entries[str(step)] = {"temperature": temperature, **values}
    path.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")


def read_temperature(workdir: str, step: int) -> float:
    """The softmax temperature fitted for checkpoint `step` after training (1.0, i.e. raw
    logits, for a checkpoint that was never calibrated)."""
    path = epath.Path(workdir) / CALIBRATION_FILENAME
    if not path.exists():
        return 1.0
    try:
        entry = json.loads(path.read_text()).get(str(step), {})
        return float(entry.get("temperature", 1.0))
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} cannot be read ({err}): delete it to use raw logits, or "
                              "rerun training to calibrate again") from err


def calibrate(workdir: str, step: int, val_logits: np.ndarray, val_labels: np.ndarray
              ) -> float:
    """Fits and records the temperature of checkpoint `step` on the validation split."""
    temperature = metrics.fit_temperature(val_logits, val_labels)
    values = {
        "val_ece_before": metrics.expected_calibration_error(
            metrics.softmax(val_logits), val_labels),
        "val_ece_after": metrics.expected_calibration_error(
            metrics.softmax(val_logits / temperature), val_labels),
        "val_nll_before": metrics.negative_log_likelihood(val_logits, val_labels),
        "val_nll_after": metrics.negative_log_likelihood(val_logits, val_labels, temperature),
    }
    if jax.process_index() == 0:
        write_calibration(workdir, step, temperature, values)
    logging.info("Calibrated checkpoint %d: temperature %.3f, validation ECE %.4f -> %.4f",
                 step, temperature, values["val_ece_before"], values["val_ece_after"])
    return temperature


def create_writer(workdir: str) -> Any:
    """A clu MetricWriter: TensorBoard + console on process 0, console only elsewhere."""
    # Imported here, not at the top: clu's writers import TensorFlow, which the train step and
    # the benchmarks that build it (scripts/) do not need.
    from clu import metric_writers

    # clu's TensorBoard writer imports TensorFlow; keep TF off the accelerators JAX uses.
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")
    return metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )


def _wandb_mode(requested: str) -> Literal["online", "offline", "disabled"]:
    """'auto' means online when an API key is configured, offline otherwise."""
    if requested != "auto":  # check_config admits only WANDB_MODES
        return cast(Literal["online", "offline", "disabled"], requested)
    import wandb

    return "online" if wandb.login(prompt=False, verify=False) else "offline"


def start_wandb(config: ml_collections.ConfigDict, workdir: str) -> Any | None:
    """A W&B run on process 0 that a resumed training continues; None when disabled."""
    mode = _wandb_mode(config.wandb.mode)
    if mode == "disabled" or jax.process_index() > 0:
        return None
    import wandb

    id_path = epath.Path(workdir) / "wandb_run_id"
    if id_path.exists():
        run_id = id_path.read_text().strip()
    else:
        run_id = os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)
    id_path.write_text(run_id)
    return wandb.init(
        project=config.wandb.project,
        entity=config.wandb.entity or None,
        name=config.wandb.name or epath.Path(workdir).name,
        dir=workdir,
        id=run_id,
        resume="allow",
        mode=mode,
        config=config.to_dict(),
    )


def log_wandb(run: Any | None, step: int, values: Mapping[str, Any]) -> None:
    if run is not None:
        run.log(dict(values), step=step)


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


class StopRequest:
    """While entered, SIGTERM (what Kubernetes and spot machines send before killing) and
    SIGINT (Ctrl-C) only set `requested` (the signal's name): the loop saves a checkpoint at the
    step it is on and returns, and rerunning resumes there. The previous handlers come back on
    exit. Only the main thread can take signals; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.requested = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (resuming from WORKDIR's latest checkpoint), then evaluates the best on test."""
    check_config(config)
    initialize_distributed(config)
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        # A `wandb agent` trial: the sweep's command names one workdir for all trials.
        workdir = os.path.join(workdir, os.environ["WANDB_RUN_ID"])
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = model_config(config)  # as the model sees it: input size, BatchNorm axis
    if jax.process_index() == 0:
        write_config(config, workdir)
    writer = create_writer(workdir)
    wandb_run = start_wandb(config, workdir)

    training = create_training(config)
    mesh, state, learning_rate_fn = training.mesh, training.state, training.learning_rate_fn
    p_train_step, p_predict = training.train_step, training.predict_step
    num_devices = mesh.devices.size

    manager = create_checkpoint_manager(workdir, config)
    # Early-stopping state; checkpointed so a resumed run stops where an unbroken one would.
    progress = {"best_accuracy": -1.0, "best_step": 0, "stopped_early": False}
    if manager.latest_step() is not None:
        state, restored = restore_checkpoint(manager, state, manager.latest_step())
        progress.update(restored)
        logging.info("Resumed from step %d in %s", int(state.step), manager.directory)
    start_step = int(state.step)

    on_device = config.data.source == "device"
    val_split = pipeline.eval_split(config.data, "val")
    eval_batch_size = config.eval_batch_size or config.batch_size

    if on_device:  # the step draws its own batch from state.step: nothing to feed
        stream: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        batches: Iterator[tuple] = itertools.repeat(())
    else:
        stream = pipeline.train_batches(
            config.data,
            config.batch_size,
            seed=config.seed,
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        batches = ((batch,) for batch in global_batches(stream, mesh))
    from clu import metric_writers, periodic_actions  # TensorFlow comes with them

    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.total_steps, writer=writer
    )
    hooks = [report_progress]
    profile = profile_window(config.profile_steps)
    patience_steps = config.early_stopping_patience * config.eval_every_steps

    train_metrics = None
    step = start_step
    # Each step's non-finite flag stays on the device until the next log: reading it each
    # step would make the host wait for every step (a stall per step on an accelerator). A
    # run of max_nonfinite_steps skipped steps therefore stops training at the next log.
    pending_nonfinite: list[tuple[int, jax.Array]] = []
    nonfinite_streak: list[int] = []  # the steps of the current run of non-finite steps
    stop = StopRequest()
    logging.info("Training steps %d..%d on %d devices.", start_step, config.total_steps, num_devices)
    with metric_writers.ensure_flushes(writer), stream, stop:
        # Compiled once, ahead of the loop: XLA's cost analysis gives the step's FLOPs.
        first = next(batches)
        batches = itertools.chain([first], batches)
        compiled_step = p_train_step.lower(state, *first).compile()
        speed = throughput.Throughput(
            throughput.compiled_flops(compiled_step) * num_devices, config.batch_size,
            _peak_flops(mesh, config.model.dtype))
        while step < config.total_steps and not progress["stopped_early"]:
            if profile and step == profile[0] and jax.process_index() == 0:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, step_metrics = compiled_step(state, *next(batches))
            step += 1
            if step == start_step + 1:
                jax.block_until_ready(state)
                speed.start(step)
            if profile and step == profile[1] and jax.process_index() == 0:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                logging.info("Profile of steps %d..%d written to %s", profile[0], step - 1,
                             os.path.join(workdir, "profile"))
            pending_nonfinite.append((step - 1, step_metrics.nonfinite.total))
            train_metrics = (
                step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
            )
            for hook in hooks:
                hook(step)

            last = step == config.total_steps
            log_now = step % config.log_every_steps == 0 or last
            if log_now:
                for bad_step, flag in pending_nonfinite:
                    nonfinite_streak = [*nonfinite_streak, bad_step] if float(flag) else []
                pending_nonfinite = []
                if len(nonfinite_streak) >= config.max_nonfinite_steps:
                    manager.wait_until_finished()
                    raise NonFiniteError(nonfinite_message(
                        config, nonfinite_streak[0], nonfinite_streak[-1]))
            if stop.requested:
                save_checkpoint(manager, state, progress, None)
                manager.wait_until_finished()
                logging.warning("%s at step %d: checkpoint saved in %s; rerun the same command "
                                "to resume.", stop.requested, step, manager.directory)
                writer.flush()
                manager.close()
                return state
            if log_now:
                summary = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
                summary["learning_rate"] = float(learning_rate_fn(step - 1))
                summary.update(speed.measure(step))
                writer.write_scalars(step, summary)
                log_wandb(wandb_run, step, summary)
                if jax.process_index() == 0:
                    append_history(workdir, step, "train", summary)
                train_metrics = None

            val_metrics = None
            if step % config.eval_every_steps == 0 or last:
                with report_progress.timed("eval", wait_jax_async_dispatch=False):
                    val_metrics, _ = evaluate_split(
                        p_predict, state, val_split, mesh, eval_batch_size
                    )
                summary = {f"val_{k}": v for k, v in val_metrics.items()}
                writer.write_scalars(step, summary)
                log_wandb(wandb_run, step, summary)
                if jax.process_index() == 0:
                    append_history(workdir, step, "val", summary)
                progress = early_stopping(
                    progress, step, val_metrics["accuracy"], patience_steps,
                    config.early_stopping_min_delta,
                )

            if step % config.checkpoint_every_steps == 0 or val_metrics is not None or last:
                save_checkpoint(manager, state, progress, val_metrics)
            if log_now:
                speed.restart()  # the next interval's rates leave evaluation and saving out
            if progress["stopped_early"]:
                logging.info(
                    "Early stop at step %d: validation accuracy has not improved on %.4f "
                    "(step %d) for %d steps.",
                    step, progress["best_accuracy"], progress["best_step"], patience_steps,
                )
    manager.wait_until_finished()
    rates = speed.summary()
    if rates:
        writer.write_scalars(step, {f"run_{k}": v for k, v in rates.items()})
        if jax.process_index() == 0:
            append_history(workdir, step, "run", {f"run_{k}": v for k, v in rates.items()})
        if wandb_run is not None:
            wandb_run.summary.update({f"run_{k}": v for k, v in rates.items()})
        logging.info("Throughput over the run: %s", ", ".join(
            f"{k} {v:.4g}" for k, v in rates.items()))

    best_step = manager.best_step()
    if best_step is not None and best_step != int(state.step):
        state, _ = restore_checkpoint(manager, state, best_step)
    best_path = str(manager.directory / str(best_step)) if best_step is not None else ""
    # Temperature scaling on the validation split: confidences that mean what they say.
    val_logits = predict(p_predict, state, val_split["image"], mesh, eval_batch_size)
    temperature = calibrate(workdir, int(state.step), val_logits, np.asarray(val_split["label"]))
    test_split = pipeline.eval_split(config.data, "test")
    test_metrics, test_logits = evaluate_split(p_predict, state, test_split, mesh, eval_batch_size)
    writer.write_scalars(int(state.step), {f"test_{k}": v for k, v in test_metrics.items()})
    if jax.process_index() == 0:
        test_labels = np.asarray(test_split["label"])
        report = metrics.write_report(
            metrics.softmax(test_logits / temperature),
            test_labels,
            os.path.join(workdir, "eval"),
            class_names=CLASSES,
            history=read_history(workdir),
            extra={"checkpoint": best_path, "step": int(state.step), "temperature": temperature,
                   "ema_decay": float(config.ema_decay),  # > 0: these are the EMA weights
                   "ece_uncalibrated": metrics.expected_calibration_error(
                       metrics.softmax(test_logits), test_labels)},
        )
        logging.info("Test accuracy %.4f (checkpoint %s)", report["accuracy"], best_path)
        if wandb_run is not None:
            import wandb

            wandb_run.log(
                {
                    "test_accuracy": report["accuracy"],
                    "confusion_matrix": wandb.Image(
                        os.path.join(workdir, "eval", "confusion_matrix.png")
                    ),
                },
                step=int(state.step),
            )
            wandb_run.summary["best_checkpoint"] = best_path
            wandb_run.summary["best_val_accuracy"] = progress["best_accuracy"]
            wandb_run.finish()
    writer.flush()
    manager.close()
    return state

