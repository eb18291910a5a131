"""Training throughput and model FLOPs utilisation (MFU), as the train loop logs them.

The FLOPs of one train step come from XLA's cost analysis of the compiled step (a multiply-add
counts 2; with data.source='device' the batch's drawing is part of the step and counted too).
MFU is the achieved FLOP/s over the devices' peak: a table of accelerators' dense peaks by
compute dtype, and for a CPU a float32 matrix-product probe measured once per process.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per device by compute dtype (vendor figures, no sparsity): bfloat16 on the
# tensor cores, float32 without TF32.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
}


def compiled_flops(compiled: Any) -> float:
    """FLOPs of one run of a compiled XLA program, per device (0 when XLA does not say)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float((cost or {}).get("flops", 0.0))


@functools.cache
def cpu_peak_flops(size: int = 1024, repeats: int = 8) -> float:
    """FLOP/s of a float32 matrix product on this CPU, all its cores (the best of a few)."""
    x = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    product(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: jax.Device, dtype: str) -> float | None:
    """Peak FLOP/s of one device at `dtype`: the table for known accelerators, the probe for a
    CPU, None for anything else (no MFU is logged then)."""
    if device.platform == "cpu":
        return cpu_peak_flops()
    for name, peaks in PEAK_FLOPS.items():
        if name in device.device_kind:
            return peaks.get(dtype, peaks["float32"])
    return None


class Throughput:
    """Images/s, step time, TFLOP/s and MFU between calls of `measure` (the first interval
    starts after the compiling step), and over the whole run in `summary`."""

    def __init__(self, flops_per_step: float, batch_size: int, peak: float | None) -> None:
        self.flops_per_step = flops_per_step  # all devices together
        self.batch_size = batch_size
        self.peak = peak  # all devices together
        self._start: tuple[float, int] | None = None
        self._seconds = 0.0  # measured so far, evaluation and checkpoints left out
        self._steps = 0

    def start(self, step: int) -> None:
        self._start = (time.perf_counter(), step)

    def _rates(self, seconds: float, steps: int) -> dict[str, float]:
        if steps <= 0 or seconds <= 0:
            return {}
        rates = {"images_per_sec": steps * self.batch_size / seconds,
                 "step_ms": 1000 * seconds / steps,
                 "tflops_per_sec": self.flops_per_step * steps / seconds / 1e12}
        if self.peak:
            rates["mfu"] = self.flops_per_step * steps / seconds / self.peak
        return rates

    def measure(self, step: int) -> dict[str, float]:
        """Rates since the last `measure` (or `start`); call after the step's results are on
        the host, so the time covers the finished steps."""
        if self._start is None:
            return {}
        now = time.perf_counter()
        seconds, steps = now - self._start[0], step - self._start[1]
        self._seconds += seconds
        self._steps += steps
        self._start = (now, step)
        return self._rates(seconds, steps)

    def restart(self) -> None:
        """Leave what happened since the last `measure` (evaluation, checkpoints) out."""
        if self._start is not None:
            self._start = (time.perf_counter(), self._start[1])

    def summary(self) -> dict[str, float]:
        """Rates over every measured interval together."""
        return self._rates(self._seconds, self._steps)
