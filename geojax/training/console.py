"""What training says on the console: one progress line per log interval (step, steps/s, ETA,
loss, accuracy), one line per evaluation and per checkpoint. Every metric (learning rate,
images/s, MFU, ...) still goes to TensorBoard, WORKDIR/history.jsonl and W&B; the console
keeps to what a person watching a run reads."""

from __future__ import annotations

import time
from collections.abc import Mapping

from absl import logging


def format_duration(seconds: float) -> str:
    """7s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class TrainingConsole:
    """The console lines of one run from `start_step` to `total_steps`. Steps/s is over the
    last log interval; the ETA divides the steps left by the run's mean rate so far (an
    evaluation or checkpoint in between counts: it is part of what is left)."""

    def __init__(self, start_step: int, total_steps: int, clock=time.monotonic) -> None:
        self.total = total_steps
        self._width = len(str(total_steps))
        self._clock = clock
        self._start = (start_step, clock())
        self._last = self._start

    def _step(self, step: int) -> str:
        return f"step {step:>{self._width}}/{self.total}"

    def progress(self, step: int, loss: float, accuracy: float) -> str:
        now = self._clock()
        last_step, last_time = self._last
        rate = (step - last_step) / max(now - last_time, 1e-9)
        mean_rate = (step - self._start[0]) / max(now - self._start[1], 1e-9)
        self._last = (step, now)
        eta = format_duration((self.total - step) / mean_rate) if mean_rate > 0 else "?"
        return self._say(f"{self._step(step)}  {rate:5.1f} steps/s  ETA {eta:>6}  "
                         f"loss {loss:.4f}  accuracy {accuracy:.1%}")

    def evaluation(self, step: int, split: str, values: Mapping[str, float]) -> str:
        return self._say(f"{self._step(step)}  {split} accuracy {values['accuracy']:.1%}  "
                         f"loss {values['loss']:.4f}")

    def checkpoint(self, step: int, path: str, best: bool) -> str:
        return self._say(f"{self._step(step)}  checkpoint {path}" + ("  (best so far)" if best
                                                                       else ""))

    @staticmethod
    def _say(line: str) -> str:
        logging.info("%s", line)
        return line
