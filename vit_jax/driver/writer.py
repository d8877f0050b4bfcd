"""Metrics written by the main process: WORKDIR/metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import os
from typing import Any

import jax


class MetricWriter:
  """One JSON line per logged step plus TensorBoard scalars; a no-op off process 0."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    import tensorflow as tf  # noqa: PLC0415 (imported lazily: slow, and only process 0)
    self._tf = tf
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    values = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    with self._tb.as_default(step=int(step)):
      for key, value in values.items():
        self._tf.summary.scalar(key, value)
    self._tb.flush()

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes a JSON file via a temporary file and a rename: never half-written."""
  if jax.process_index() != 0:
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
