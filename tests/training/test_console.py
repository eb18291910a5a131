"""The training console's lines: what a person watching a run reads."""

from geojax.training.console import TrainingConsole, format_duration


def test_progress_evaluation_and_checkpoint_lines():
    times = iter([100.0, 110.0, 130.0])  # start, then two logs
    console = TrainingConsole(0, 3000, clock=lambda: next(times))
    assert console.progress(100, 2.34131, 0.112) == (
        "step  100/3000   10.0 steps/s  ETA  4m50s  loss 2.3413  accuracy 11.2%")
    # 100 steps in the last 20 s: 5.0 steps/s; 200 in 30 s overall: 2800 left at 6.67/s.
    assert console.progress(200, 2.0, 0.25) == (
        "step  200/3000    5.0 steps/s  ETA  7m00s  loss 2.0000  accuracy 25.0%")
    assert console.evaluation(500, "validation", {"accuracy": 0.594, "loss": 0.920313}) == (
        "step  500/3000  validation accuracy 59.4%  loss 0.9203")
    assert console.checkpoint(500, "/w/checkpoints/500", best=True) == (
        "step  500/3000  checkpoint /w/checkpoints/500  (best so far)")


def test_durations_read_as_a_person_writes_them():
    assert [format_duration(s) for s in (7.4, 185, 3725, -1)] == ["7s", "3m05s", "1h02m", "0s"]
