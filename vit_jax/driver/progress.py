"""Training progress on the terminal: a tqdm bar on a TTY, plain lines in a log.

A bar redrawn into a redirected log fills it with carriage-return frames (51 KB for
the demo job); a log gets one line per logged step instead:

  step 300/1000  loss 0.4210  812 images/s  ETA 0:01:05
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, Optional

from absl import logging


class Progress:
  """Steps done out of `total`; `update` every step, `log` at logging steps."""

  def __init__(self, total: int, start: int, enabled: bool, bar: bool,
               stream: Optional[Any] = None):
    stream = stream or sys.stderr
    self.total, self.done, self.enabled = total, start, enabled
    self._start_step, self._t0 = start, time.perf_counter()
    self._bar = None
    if enabled and bar and stream.isatty():
      from tqdm import tqdm  # noqa: PLC0415

      self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                       file=stream)

  def update(self, steps: int = 1) -> None:
    self.done += steps
    if self._bar is not None:
      self._bar.update(steps)

  def eta_seconds(self) -> float:
    elapsed = time.perf_counter() - self._t0
    rate = (self.done - self._start_step) / max(elapsed, 1e-9)
    return (self.total - self.done) / rate if rate > 0 else float("inf")

  def log(self, loss: float, images_per_sec: float) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_sec:.0f}")
      return
    eta = self.eta_seconds()
    eta_text = str(datetime.timedelta(seconds=round(eta))) if eta != float("inf") else "?"
    logging.info("step %d/%d  loss %.4f  %.0f images/s  ETA %s", self.done, self.total, loss,
                 images_per_sec, eta_text)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
