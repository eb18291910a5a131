"""A training workdir's checkpoint loaded for inference: on the device mesh as training ran it
(`load_workdir`: evaluation), or set up once for serving, float32 on one device with no
BatchNorm mesh axis (`serving_model`: export and prediction)."""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from geojax import models
from geojax.training.checkpoints import (
    CheckpointError,
    create_checkpoint_manager,
    restore_checkpoint,
)
from geojax.training.config import create_model
from geojax.training.state import (
    TrainState,
    create_learning_rate_fn,
    create_mesh,
    create_optimizer,
    create_train_state,
)
from geojax.training.steps import make_parallel_steps, predict
from geojax.training.workdir import read_config, read_temperature


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


class WorkdirModel(NamedTuple):
    """A workdir's checkpoint on the device mesh, as training evaluates it (`load_workdir`)."""

    config: ml_collections.ConfigDict  # the workdir's config.json
    state: TrainState
    predict_fn: Callable  # the jitted data-parallel predict step
    mesh: Mesh
    step: int
    temperature: float  # fitted for this checkpoint after training (1.0: never calibrated)

    def logits(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Raw logits [N, classes] of uint8 images [N, S, S, 3] (divide by `temperature` to
        calibrate), in global batches of `batch_size` over the mesh."""
        return predict(self.predict_fn, self.state, images, self.mesh, batch_size)


def load_workdir(workdir: str, checkpoint: str = "best") -> WorkdirModel:
    """WORKDIR's 'best', 'latest' or numbered checkpoint with its config and temperature."""
    config = read_config(workdir)
    state, predict_fn, mesh, step = load_for_inference(config, workdir, checkpoint)
    return WorkdirModel(config, state, predict_fn, mesh, step, read_temperature(workdir, step))


class ServingModel(NamedTuple):
    """A workdir's checkpoint as it is served: `apply_fn(variables, images float32 [N, S, S, 3]
    in [0, 1]) -> calibrated logits` (float32, one device)."""

    apply_fn: Callable[[Any, Any], Any]
    variables: Any
    config: Any  # the workdir's ml_collections config
    step: int
    temperature: float


def serving_model(workdir: str, checkpoint: str = "best") -> ServingModel:
    """WORKDIR's 'best', 'latest' or numbered checkpoint set up for serving: float32 on one
    device (no mesh axis for BatchNorm, no bfloat16 on CPU servers), logits divided by the
    temperature fitted after training. The export and `geojax.predict` both serve this."""
    loaded = load_workdir(workdir, checkpoint)
    state = loaded.state.for_inference()  # the EMA weights when the run kept them
    temperature = loaded.temperature
    model_config = ml_collections.ConfigDict(loaded.config.model.to_dict())
    model_config.dtype = "float32"
    model_config.bn_axis_name = None
    model = models.create_model(model_config)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    def apply_fn(v: Any, images: Any) -> Any:
        return model.apply(v, images, train=False) / temperature

    return ServingModel(apply_fn, variables, loaded.config, int(loaded.step), temperature)
