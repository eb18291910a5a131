"""Throughput and MFU arithmetic, and the peak FLOP/s each device kind is measured against."""

import pytest

from geojax.training import throughput


def test_rates_between_measures_leave_evaluation_out(monkeypatch):
    clock = iter([10.0, 12.0, 15.0, 16.0])  # start, measure, restart, measure
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    speed = throughput.Throughput(flops_per_step=4e12, batch_size=64, peak=8e12)
    speed.start(1)
    first = speed.measure(5)  # 4 steps in 2 s
    assert first == pytest.approx({"images_per_sec": 128.0, "step_ms": 500.0,
                                   "tflops_per_sec": 8.0, "mfu": 1.0})
    speed.restart()  # 3 s of evaluation, left out
    second = speed.measure(6)  # 1 step in 1 s
    assert second["step_ms"] == pytest.approx(1000.0) and second["mfu"] == pytest.approx(0.5)
    assert speed.summary()["step_ms"] == pytest.approx(600.0)  # 5 steps in 3 s of training


def test_peaks_by_device_kind():
    class Device:
        def __init__(self, platform, kind):
            self.platform, self.device_kind = platform, kind

    assert throughput.peak_flops(Device("gpu", "NVIDIA H100 80GB HBM3"), "bfloat16") == 989e12
    assert throughput.peak_flops(Device("gpu", "NVIDIA A100-SXM4-40GB"), "float32") == 19.5e12
    assert throughput.peak_flops(Device("gpu", "Tesla T4"), "float32") is None
    cpu = throughput.peak_flops(Device("cpu", "cpu"), "float32")
    assert cpu is not None and 1e9 < cpu < 1e14  # a measured matmul rate
