"""The offline sweep runner: W&B sweep YAML -> trial commands, results table."""

import json
import sys

import pytest

from geojax.training import sweep
from tests.train_setup import REPO


def test_the_project_sweep_file_loads_and_makes_main_commands():
    spec = sweep.load_sweep(str(REPO / "experiments" / "sweep.yaml"))
    [assignment] = list(sweep.trials(spec, 1))
    command = sweep.trial_command(spec, assignment, "runs/s/trial-000")
    assert command[:3] == [sys.executable, "-m", "geojax.main"]
    assert "--config=experiments/quick.py" in command
    assert command[-1] == "--workdir=runs/s/trial-000"
    assert sum(a.startswith("--workdir") for a in command) == 1
    assert {a.split("=")[0] for a in command if a.startswith("--config.")} == {
        f"--{name}" for name in spec["parameters"]
    }


def test_grid_enumerates_every_combination_up_to_count():
    spec = {"method": "grid", "parameters": {"config.a": {"values": [1, 2]},
                                             "config.b": {"values": ["x", "y"]},
                                             "config.c": {"value": 0}}}
    grid = list(sweep.trials(spec, 10))
    assert len(grid) == 4
    assert {(t["config.a"], t["config.b"], t["config.c"]) for t in grid} == {
        (1, "x", 0), (1, "y", 0), (2, "x", 0), (2, "y", 0)}
    assert len(list(sweep.trials(spec, 3))) == 3


def test_random_search_respects_distributions_and_seed():
    spec = {"method": "random", "parameters": {
        "config.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "config.n": {"distribution": "int_uniform", "min": 1, "max": 3}}}
    draws = list(sweep.trials(spec, 20, seed=1))
    assert all(1e-4 <= d["config.lr"] <= 1e-2 and d["config.n"] in (1, 2, 3) for d in draws)
    assert draws == list(sweep.trials(spec, 20, seed=1))


def test_methods_that_need_the_wandb_server_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("method: bayes\nparameters: {config.a: {values: [1]}}\n")
    with pytest.raises(sweep.SweepError, match="bayes"):
        sweep.load_sweep(str(path))


def test_tuple_values_become_config_flag_tuples():
    spec = {"program": "geojax/main.py", "parameters": {}}
    command = sweep.trial_command(spec, {"config.model.head_widths": [64]}, "w")
    assert "--config.model.head_widths=(64,)" in command


def test_trial_result_and_table_rank_the_best_first(tmp_path):
    for name, accuracies in (("t0", [0.5, 0.6]), ("t1", [0.9, 0.8])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.jsonl").write_text("\n".join(
            json.dumps({"step": i, "split": "val", "val_accuracy": a, "val_loss": 1 - a})
            for i, a in enumerate(accuracies)))
    rows = [{"trial": i, **sweep.trial_result(str(tmp_path / f"t{i}"))} for i in (0, 1)]
    assert rows[1]["val_accuracy"] == 0.9 and rows[1]["val_loss"] == pytest.approx(0.1)
    table = sweep.format_table(rows, "val_accuracy", "maximize").splitlines()
    assert table[2].startswith("| 1 |")


def test_the_command_exits_2_naming_what_is_wrong_with_the_sweep_file(tmp_path, capsys):
    from geojax.sweep import main

    path = tmp_path / "s.yaml"
    path.write_text("method: bayes\nparameters: {config.a: {values: [1]}}\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("geojax.sweep: ") and "bayes" in err
