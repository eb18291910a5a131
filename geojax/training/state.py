"""What training starts from: the processes joined, the device mesh, the learning-rate schedule,
the optimizer and the initial train state."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from geojax import models
from geojax.training.config import DATA_AXIS, OPTIMIZERS, ConfigError, model_config

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
# Learning-rate schedule, optimizer
# ---------------------------------------------------------------------------------------------


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
