"""Training: a few steps end to end, N devices = 1 device, resume after SIGKILL, config errors."""

import json
import signal
import subprocess
import textwrap
import time

import jax
import numpy as np
import pytest

from geojax.inference.workdir import load_for_inference
from geojax.training.checkpoints import CheckpointError
from geojax.training.config import (
    ConfigError,
    check_config,
    create_model,
    nonfinite_message,
    profile_window,
)
from geojax.training.loop import dry_run, early_stopping, train_and_evaluate
from geojax.training.steps import (
    create_training,
    cross_entropy_loss,
    global_batches,
    predict,
    shape_accuracy,
)
from geojax.training.workdir import (
    CALIBRATION_FILENAME,
    HISTORY_FILENAME,
    append_history,
    read_config,
    read_history,
    read_temperature,
    write_config,
)
from tests.train_setup import REPO, TINY, load_config, main_command, python_env, run

from conftest import free_port


def _params(workdir, checkpoint: str = "latest") -> dict:
    config = read_config(str(workdir))
    state, _, _, step = load_for_inference(config, str(workdir), checkpoint)
    return {"step": step, "params": jax.device_get(state.params),
            "batch_stats": jax.device_get(state.batch_stats)}


def _assert_trees_equal(a, b, **tolerance) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if tolerance:
            np.testing.assert_allclose(x, y, **tolerance)
        else:
            np.testing.assert_array_equal(x, y)


def test_a_few_steps_on_one_device_write_checkpoints_metrics_and_report(tmp_path):
    config = load_config("quick")
    best = train_and_evaluate(config, str(tmp_path))

    written = json.loads((tmp_path / "config.json").read_text())
    assert written["batch_size"] == TINY["batch_size"]
    history = read_history(str(tmp_path))
    assert [p["step"] for p in history if p["split"] == "train"] == [1, 2, 3]
    assert all(np.isfinite(p["train_loss"]) for p in history if p["split"] == "train")
    # Throughput from the second step on (the first compiles): images/s, step time, XLA's
    # FLOPs of the compiled step over time, and MFU against this CPU's matmul probe.
    speed = [p for p in history if p["split"] == "train" and "images_per_sec" in p]
    assert [p["step"] for p in speed] == [2, 3]
    for p in speed:
        assert p["images_per_sec"] == pytest.approx(TINY["batch_size"] * 1000 / p["step_ms"])
        assert p["tflops_per_sec"] > 0 and p["mfu"] > 0
    assert [p["step"] for p in history if p["split"] == "val"] == [2, 3]
    (run,) = [p for p in history if p["split"] == "run"]  # the run's totals, logged at the end
    assert run["step"] == 3 and run["run_images_per_sec"] > 0 and run["run_mfu"] > 0
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2, 3]
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_examples"] == TINY["data.eval_size"]
    assert report["step"] == int(best.step)  # the test split is scored on the best checkpoint
    assert np.array(report["confusion_matrix"]).sum() == TINY["data.eval_size"]
    for png in ("confusion_matrix.png", "roc_curves.png", "training_curves.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 0
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # The best checkpoint is calibrated on the validation split; the test report applies it.
    temperature = read_temperature(str(tmp_path), int(best.step))
    assert temperature > 0 and report["temperature"] == temperature
    calibration = json.loads((tmp_path / CALIBRATION_FILENAME).read_text())
    assert calibration[str(int(best.step))]["val_nll_after"] <= (
        calibration[str(int(best.step))]["val_nll_before"] + 1e-9)
    assert read_temperature(str(tmp_path), 999) == 1.0  # never calibrated: raw logits


def test_a_step_with_a_non_finite_loss_is_skipped_and_a_run_of_them_stops_training(tmp_path):
    # No warmup: the skipped step leaves the optimizer's count (and so the schedule) at 0.
    config = load_config("quick", {**TINY, "warmup_steps": 0})
    training = create_training(config)
    batch = {"image": np.full((8, 16, 16, 3), 100, np.float32),
             "label": np.arange(8, dtype=np.int32) % 10}
    poisoned = {**batch, "image": batch["image"].copy()}
    poisoned["image"][0, 0, 0, 0] = np.nan
    (sharded,) = global_batches(iter([poisoned]), training.mesh)
    before = jax.device_get(training.state.params)
    state, metrics = training.train_step(training.state, sharded)
    assert int(state.step) == 1 and float(metrics.compute()["nonfinite"]) == 1.0
    _assert_trees_equal(jax.device_get(state.params), before)  # no update
    (good,) = global_batches(iter([batch]), training.mesh)
    state, metrics = training.train_step(state, good)
    assert float(metrics.compute()["nonfinite"]) == 0.0
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(before), strict=True))

    message = nonfinite_message(config, 40, 44)
    assert "steps 40..44" in message and "start_step=step" in message and "seed=0" in message

    # A diverged run (a learning rate of 1e30 overflows the logits) stops with that message.
    values = {**TINY, "learning_rate": 1e30, "warmup_steps": 0, "total_steps": 40,
              "max_nonfinite_steps": 3, "eval_every_steps": 40, "checkpoint_every_steps": 40}
    result = run(main_command("quick", tmp_path / "diverged", values))
    assert result.returncode == 2
    assert "geojax.main: the loss or gradients were not finite for 3 steps in a row" in (
        result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("override", "named"), [
    ("learning_rate=-1", "learning_rate=-1"),                       # training
    ("data.source=tape", "data.source='tape'"),                     # data
    ("model.name=foo", "unknown model 'foo'"),                      # model
    ("model.widht=2", "--config.model.widht names a field"),       # a misspelt field
])
def test_a_bad_config_value_exits_2_naming_the_field_and_writes_nothing(tmp_path, override,
                                                                        named):
    workdir = tmp_path / "never"
    result = run([*main_command("quick", workdir, TINY), f"--config.{override}"])
    assert result.returncode == 2, result.stderr[-2000:]
    ours = [line for line in result.stderr.splitlines() if line.startswith("geojax.main: ")]
    assert len(ours) == 1 and named in ours[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def test_shape_free_images_train_toward_uniform_and_are_left_out_of_accuracy():
    import jax.numpy as jnp

    from geojax import NO_SHAPE

    logits = jnp.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    labels = jnp.array([0, NO_SHAPE, 0])
    loss = np.asarray(cross_entropy_loss(logits, labels))
    assert loss[1] == pytest.approx(np.log(3), abs=1e-6)  # uniform logits: the minimum
    confident = cross_entropy_loss(jnp.array([[4.0, 0.0, 0.0]]), jnp.array([NO_SHAPE]))
    assert float(confident[0]) > loss[1]  # a confident class on "no shape" costs more
    assert float(shape_accuracy(logits, labels)) == pytest.approx(0.5)


_SAME_AS_ONE_DEVICE = textwrap.dedent("""
    import jax, numpy as np
    from geojax.data import train_batches
    from geojax.training.config import ConfigError
    from geojax.training.steps import create_training, global_batches
    from tests.train_setup import load_config, override
    assert jax.device_count() == 2
    config = load_config("quick")
    # Dropout masks depend on the device; SGD does not magnify rounding as Adam's first steps do.
    override(config, {"model.head_dropout": (0.0,), "optimizer": "sgd", "learning_rate": 0.1,
                      "warmup_steps": 0})
    stream = train_batches(config.data, config.batch_size, seed=0)
    batches = [next(stream) for _ in range(3)]
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh, _, _, _, state, step, _ = create_training(config, devices)
        for batch in global_batches(iter(batches), mesh):
            state, metrics = step(state, batch)
        results.append(jax.device_get((state.params, state.batch_stats)))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("SAME")
    config.batch_size = 3
    try:
        create_training(config)
    except ConfigError as e:
        assert "must be divisible by the 2 devices" in str(e), e
        print("REFUSED")
""")


def test_two_devices_give_the_parameters_of_one_on_the_same_global_batch():
    result = run([*_python(), "-c", _SAME_AS_ONE_DEVICE], devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SAME" in result.stdout
    assert "REFUSED" in result.stdout  # a global batch that does not split over the devices


def _python() -> list[str]:
    import sys

    return [sys.executable]


def _start_until_first_checkpoint(workdir, values) -> subprocess.Popen:
    """A quick training run in a subprocess (stderr piped), returned once it has written its
    first checkpoint (or ended, or 180 s passed)."""
    process = subprocess.Popen(main_command("quick", workdir, values), cwd=REPO,
                               env=python_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    checkpoints = workdir / "checkpoints"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.02)
    return process


def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    values = {**TINY, "total_steps": 24, "eval_every_steps": 12, "checkpoint_every_steps": 3}
    reference = tmp_path / "reference"
    result = run(main_command("quick", reference, values))
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    process = _start_until_first_checkpoint(killed, values)
    checkpoints = killed / "checkpoints"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert interrupted_at < values["total_steps"], "the run ended before it could be killed"

    result = run(main_command("quick", killed, values))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step" in result.stderr

    resumed, uninterrupted = _params(killed), _params(reference)
    assert resumed["step"] == uninterrupted["step"] == values["total_steps"]
    _assert_trees_equal(resumed["params"], uninterrupted["params"])
    _assert_trees_equal(resumed["batch_stats"], uninterrupted["batch_stats"])

    # SIGTERM (preemption) saves the step it is on and exits cleanly; the rerun resumes there.
    stopped = tmp_path / "stopped"
    process = _start_until_first_checkpoint(stopped, values)
    checkpoints = stopped / "checkpoints"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "SIGTERM at step" in stderr and "checkpoint saved" in stderr
    saved_at = int(stderr.split("SIGTERM at step ")[1].split(":")[0])
    assert saved_at < values["total_steps"], "the run ended before SIGTERM reached it"
    assert saved_at in {int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()}
    result = run(main_command("quick", stopped, values))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from step {saved_at}" in result.stderr
    _assert_trees_equal(_params(stopped)["params"], uninterrupted["params"])


@pytest.mark.parametrize(
    ("override_flag", "expected"),
    [
        ("--config.totl_steps=3", 'names a field the config does not have'),
        ("--config.model.widht=0.5", "--config.model.widht"),
        ("--config.total_steps=many", "invalid literal for int()"),
        ("--config.optimizer=adamm", "optimizer='adamm' is not one of"),
    ],
)
def test_bad_config_overrides_fail_with_a_clear_message(tmp_path, override_flag, expected):
    result = run([*main_command("quick", tmp_path, {"wandb.mode": "disabled"}), override_flag])
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_checkpoint_fails_with_a_clear_message(tmp_path):
    config = load_config("quick", {**TINY, "total_steps": 1})
    train_and_evaluate(config, str(tmp_path))
    for array_file in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if array_file.is_file() and "manifest" in array_file.name:
            array_file.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        train_and_evaluate(load_config("quick", {**TINY, "total_steps": 2}), str(tmp_path))


def test_evaluating_a_workdir_without_checkpoints_says_to_train_first(tmp_path):
    config = load_config("quick")
    write_config(config, str(tmp_path))
    with pytest.raises(CheckpointError, match="train first"):
        load_for_inference(config, str(tmp_path))


def test_two_processes_train_together_like_one_process_with_two_devices(tmp_path):
    values = {**TINY, "optimizer": "sgd", "learning_rate": 0.1, "warmup_steps": 0,
              "model.head_dropout": (0.0,), "checkpoint.async_save": False}
    port = free_port()
    processes = [
        subprocess.Popen(
            main_command("quick", tmp_path / "together", {
                **values,
                "distributed.enabled": True,
                "distributed.coordinator_address": f"localhost:{port}",
                "distributed.num_processes": 2,
                "distributed.process_id": i,
            }),
            cwd=REPO, env=python_env(devices=1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "on 2 device(s)" in outputs[0][1]

    result = run(main_command("quick", tmp_path / "alone", values), devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    together, alone = _params(tmp_path / "together"), _params(tmp_path / "alone")
    assert together["step"] == alone["step"] == values["total_steps"]
    _assert_trees_equal(together["params"], alone["params"], rtol=1e-5, atol=1e-6)


def test_early_stopping_waits_patience_steps_after_the_best_accuracy():
    progress = {"best_accuracy": -1.0, "best_step": 0, "stopped_early": False}
    history = [(10, 0.5), (20, 0.7), (30, 0.69), (40, 0.705), (50, 0.7)]
    states = []
    for step, accuracy in history:
        progress = early_stopping(progress, step, accuracy, patience_steps=30,
                                        min_delta=0.01)
        states.append((progress["best_step"], progress["stopped_early"]))
    # 0.705 is not 0.01 better than 0.7: the best stays at step 20, and 50 - 20 >= 30.
    assert states == [(10, False), (20, False), (20, False), (20, False), (20, True)]


def test_early_stopping_with_zero_patience_never_stops():
    progress = {"best_accuracy": 0.9, "best_step": 0, "stopped_early": False}
    assert not early_stopping(progress, 1000, 0.1, patience_steps=0)["stopped_early"]


def test_the_console_keeps_geojax_lines_and_every_warning_only():
    import logging
    import os

    from geojax.main import _OwnInfoOnly

    def record(path: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("absl", level, path, 1, "message", None, None)

    keep = _OwnInfoOnly()
    site = f"{os.sep}venv{os.sep}site-packages{os.sep}"
    assert keep.filter(record(f"{os.sep}repo{os.sep}geojax{os.sep}training{os.sep}loop.py"))
    # clu's scalar dumps and progress notes: geojax.training.console says it in one line.
    assert not keep.filter(record(f"{site}clu{os.sep}metric_writers{os.sep}logging_writer.py"))
    assert not keep.filter(record(f"{site}clu{os.sep}platform{os.sep}local.py"))
    assert not keep.filter(record(f"{site}orbax{os.sep}checkpoint{os.sep}checkpoint_manager.py"))
    assert keep.filter(record(f"{site}orbax{os.sep}checkpoint{os.sep}x.py", logging.WARNING))


def test_history_skips_a_line_cut_short_by_a_killed_run(tmp_path):
    append_history(str(tmp_path), 1, "train", {"train_loss": 2.0})
    append_history(str(tmp_path), 2, "train", {"train_loss": 1.5})
    with open(tmp_path / HISTORY_FILENAME, "a") as f:
        f.write('{"step": 3, "split": "tr')  # killed mid-write
    assert [p["step"] for p in read_history(str(tmp_path))] == [1, 2]


def test_dry_run_compiles_for_the_devices_and_writes_nothing(tmp_path):
    workdir = tmp_path / "never"
    result = run([*main_command("quick", workdir, TINY), "--dry_run"], devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "devices          2 (batch 8, 4 per device)" in out
    plan = dry_run(load_config("quick"))
    assert f"{plan['parameters']:,} parameters" in out
    assert plan["flops_per_image"] > 0 and plan["memory_per_device_bytes"]["temporaries"] > 0
    assert "GFLOPs per image" in out and "GiB per device" in out
    assert not workdir.exists()
    bad = run([*main_command("quick", workdir, {**TINY, "profile_steps": "5-9"}), "--dry_run"])
    assert bad.returncode != 0 and "profile_steps='5-9': expected 'START:END'" in bad.stderr
    assert not workdir.exists()


def test_profile_steps_write_a_trace_of_that_window(tmp_path):
    assert profile_window("") is None and profile_window("2:4") == (2, 4)
    with pytest.raises(ConfigError, match="START < END"):
        profile_window("4:4")
    train_and_evaluate(load_config("quick", {**TINY, "profile_steps": "1:3"}),
                             str(tmp_path))
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces, sorted(str(p) for p in tmp_path.rglob("*"))


def test_gradient_accumulation_gives_the_large_batch_update():
    """Four micro-batches of 4 and one batch of 16 make the same update (float32). The
    backbone is frozen, so its BatchNorm runs on its averages: BatchNorm is the one part whose
    result depends on the split (each micro-batch's own statistics), checked separately."""
    from geojax.data import train_batches

    frozen = {**TINY, "batch_size": 16, "warmup_steps": 0, "optimizer": "sgd",
              "model.freeze_backbone": True, "model.trainable_blocks": 0,
              "model.head_dropout": (0.0,)}
    results = {}
    for accum in (1, 4):
        config = load_config("quick", {**frozen, "grad_accum_steps": accum})
        training = create_training(config)
        with train_batches(config.data, config.batch_size, seed=0) as stream:
            (batch,) = global_batches(iter([next(stream)]), training.mesh)
        state, metrics = training.train_step(training.state, batch)
        results[accum] = (jax.device_get(state.params), metrics.compute())
    _assert_trees_equal(results[1][0], results[4][0], rtol=1e-5, atol=1e-6)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(results[1][1][name], results[4][1][name], rtol=1e-5)

    # With BatchNorm in training mode the steps run and the statistics take each micro-batch.
    config = load_config("quick", {**TINY, "batch_size": 16, "grad_accum_steps": 4})
    training = create_training(config)
    with train_batches(config.data, config.batch_size, seed=0) as stream:
        (batch,) = global_batches(iter([next(stream)]), training.mesh)
    before = jax.device_get(training.state.batch_stats)
    state, metrics = training.train_step(training.state, batch)
    assert np.isfinite(float(metrics.compute()["loss"]))
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.batch_stats)), strict=True))
    with pytest.raises(ConfigError, match="grad_accum_steps=3"):
        create_training(load_config("quick", {**TINY, "batch_size": 16,
                                                    "grad_accum_steps": 3}))


def test_ema_averages_the_weights_and_is_what_evaluation_and_export_use(tmp_path):
    config = load_config("quick", {**TINY, "ema_decay": 0.5, "warmup_steps": 0})
    training = create_training(config)
    stream = __import__("geojax.data", fromlist=["train_batches"]).train_batches(
        config.data, config.batch_size, seed=0)
    (batch,) = global_batches(iter([next(stream)]), training.mesh)
    stream.close()
    before = jax.device_get(training.state.params)
    state, _ = training.train_step(training.state, batch)
    after, ema = jax.device_get(state.params), jax.device_get(state.ema["params"])
    for b, a, e in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(ema),
                       strict=True):
        np.testing.assert_allclose(e, 0.5 * b + 0.5 * a, rtol=1e-6, atol=1e-7)
    # Prediction (evaluation, the best checkpoint's choice, evaluate) runs the EMA weights.
    images = np.asarray(batch["image"])
    logits = predict(training.predict_step, state, images, training.mesh, 8)
    ema_only = state.for_inference()
    assert ema_only.params is state.ema["params"]
    model = create_model(config)
    expected = model.apply({"params": ema_only.params, "batch_stats": ema_only.batch_stats},
                           images.astype(np.float32) / 255.0, train=False)
    np.testing.assert_allclose(logits, np.asarray(expected), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="ema_decay=1.0 must be in"):
        check_config(load_config("quick", {**TINY, "ema_decay": 1.0}))
    # A run with EMA checkpoints it, resumes it and says so in its report.
    values = {**TINY, "ema_decay": 0.9, "total_steps": 2}
    train_and_evaluate(load_config("quick", values), str(tmp_path))
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["ema_decay"] == 0.9
    restored, *_ = load_for_inference(load_config("quick", values), str(tmp_path))
    assert set(restored.ema) == {"params", "batch_stats"}
