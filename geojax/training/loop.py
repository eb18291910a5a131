"""The training loop: train a shape classifier from a config into a workdir, and its dry run.

The algorithm, top to bottom: create the model and the optimizer (warmup + cosine learning
rate), initialise or restore the train state, then loop: one jitted data-parallel train step
per batch (`geojax.training.steps`), evaluate on the validation split, checkpoint, stop early
when validation accuracy stops improving; finally calibrate the best checkpoint on the
validation split and evaluate it on the test split. Metric writers (TensorBoard), W&B and a
clean stop on SIGTERM/SIGINT are here too.
"""

import contextlib
import itertools
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from geojax import CLASSES, NO_SHAPE
from geojax.core import metrics
from geojax.data import pipeline
from geojax.training import throughput
from geojax.training.checkpoints import (
    create_checkpoint_manager,
    restore_checkpoint,
    save_checkpoint,
)
from geojax.training.config import (
    DATA_AXIS,
    NonFiniteError,
    check_config,
    model_config,
    nonfinite_message,
    profile_window,
)
from geojax.training.console import TrainingConsole
from geojax.training.state import TrainState, initialize_distributed
from geojax.training.steps import create_training, evaluate_split, global_batches, predict
from geojax.training.workdir import append_history, read_history, write_calibration, write_config

# ---------------------------------------------------------------------------------------------
# Early stopping and calibration
# ---------------------------------------------------------------------------------------------


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


def calibrate(workdir: str, step: int, val_logits: np.ndarray, val_labels: np.ndarray,
              no_shape_logits: np.ndarray | None = None) -> float:
    """Fits and records the temperature of checkpoint `step` on the validation split and, where
    given, shape-free images (target uniform; `pipeline.no_shape_split`)."""
    logits, labels = val_logits, val_labels
    if no_shape_logits is not None:
        logits = np.concatenate([val_logits, no_shape_logits])
        labels = np.concatenate([val_labels, np.full(len(no_shape_logits), NO_SHAPE)])
    temperature = metrics.fit_temperature(logits, labels)
    values = {
        "val_ece_before": metrics.expected_calibration_error(
            metrics.softmax(val_logits), val_labels),
        "val_ece_after": metrics.expected_calibration_error(
            metrics.softmax(val_logits / temperature), val_labels),
        "val_nll_before": metrics.negative_log_likelihood(val_logits, val_labels),
        "val_nll_after": metrics.negative_log_likelihood(val_logits, val_labels, temperature),
    }
    if no_shape_logits is not None and len(no_shape_logits):  # max() of nothing fails
        values["no_shape_max_confidence_after"] = float(
            metrics.softmax(no_shape_logits / temperature).max())
    if jax.process_index() == 0:
        write_calibration(workdir, step, temperature, values)
    logging.info("Calibrated checkpoint %d: temperature %.3f, validation ECE %.4f -> %.4f",
                 step, temperature, values["val_ece_before"], values["val_ece_after"])
    return temperature


# ---------------------------------------------------------------------------------------------
# Side effects: writers, W&B
# ---------------------------------------------------------------------------------------------


def create_writer(workdir: str) -> Any:
    """A clu MetricWriter: TensorBoard on process 0, nothing elsewhere. The console has its own
    lines (`geojax.training.console`), not a dump of every scalar."""
    # Imported here, not at the top: clu's writers import TensorFlow, which a dry run does not
    # need.
    from clu import metric_writers

    # clu's TensorBoard writer imports TensorFlow; keep TF off the accelerators JAX uses.
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")
    writers = [metric_writers.SummaryWriter(workdir)] if jax.process_index() == 0 else []
    return metric_writers.AsyncMultiWriter(writers)


def _wandb_mode(requested: str) -> Literal["online", "offline", "disabled"]:
    """'auto' means online when an API key is configured, offline otherwise."""
    if requested != "auto":  # check_config admits only WANDB_MODES
        return cast(Literal["online", "offline", "disabled"], requested)
    import wandb  # here, not at the top: heavy, and runs without W&B never need it

    return "online" if wandb.login(prompt=False, verify=False) else "offline"


def start_wandb(config: ml_collections.ConfigDict, workdir: str) -> Any | None:
    """A W&B run on process 0 that a resumed training continues; None when disabled."""
    mode = _wandb_mode(config.wandb.mode)
    if mode == "disabled" or jax.process_index() > 0:
        return None
    import wandb  # only when W&B is on (see `_wandb_mode`)

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
# The dry run
# ---------------------------------------------------------------------------------------------


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
    # Here, not at the top: TensorFlow comes with them, which a dry run does not need.
    from clu import metric_writers, periodic_actions

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
    logging.info("Training %s at %d px, steps %d..%d, batch %d on %d device(s); workdir %s",
                 config.model.name, config.data.img_size, start_step, config.total_steps,
                 config.batch_size, num_devices, workdir)
    console = TrainingConsole(start_step, config.total_steps)
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
                console.progress(step, summary["train_loss"], summary["train_accuracy"])
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
                console.evaluation(step, "validation", val_metrics)

            if step % config.checkpoint_every_steps == 0 or val_metrics is not None or last:
                save_checkpoint(manager, state, progress, val_metrics)
                console.checkpoint(step, str(manager.directory / str(step)),
                                   val_metrics is not None and progress["best_step"] == step)
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
    # Temperature scaling on the validation split and shape-free images: confidences that mean
    # what they say, on shapes and on "no shape" alike.
    val_logits = predict(p_predict, state, val_split["image"], mesh, eval_batch_size)
    no_shape = pipeline.no_shape_split(config.data)
    no_shape_logits = (predict(p_predict, state, no_shape["image"], mesh, eval_batch_size)
                       if len(no_shape["image"]) else None)
    temperature = calibrate(workdir, int(state.step), val_logits, np.asarray(val_split["label"]),
                            no_shape_logits)
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
            import wandb  # a W&B run exists, so wandb is already loaded

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
