"""Checkpoints of a training run in WORKDIR/checkpoints (Orbax): the manager that keeps the
latest and the best, saving a state and its early-stopping progress, restoring them."""

from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from geojax.core.errors import UserError
from geojax.training.state import TrainState


class CheckpointError(UserError, RuntimeError):
    """A checkpoint in the workdir is missing or cannot be read."""


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
