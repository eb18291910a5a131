"""The data-parallel steps: losses, the per-device train and predict steps, their jitted
`shard_map` over the mesh, the whole set-up of a training (`create_training`), and feeding
global arrays to the steps (`global_batches`, batched `predict`, `evaluate_split`).

The train step is written once as per-device code (`jax.shard_map` over the mesh axis 'data'
under `jax.jit`): each device takes its slice of the global batch, gradients are averaged
with `lax.pmean` and BatchNorm statistics are global-batch (the model's `bn_axis_name`), so N
devices or N hosts compute what one device would on the whole batch.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import linen as nn
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from geojax import NO_SHAPE, NUM_CLASSES
from geojax.data.device import batches as device_batches
from geojax.training.config import DATA_AXIS, ConfigError, create_model
from geojax.training.state import (
    TrainState,
    create_learning_rate_fn,
    create_mesh,
    create_optimizer,
    create_train_state,
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
    (data.source='device': `make_batch` is `geojax.data.device.batches.local_batch` bound to
    the config)."""
    return train_step(state, make_batch(state.step), **kwargs)


def device_batch_maker(config: ml_collections.ConfigDict) -> Callable[[jax.Array], Any]:
    """Per-device batch of a step for data.source='device' (see `geojax.data.device.batches`)."""
    return functools.partial(device_batches.local_batch, config.data, batch_size=config.batch_size,
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
