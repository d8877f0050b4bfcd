"""Metrics written by the main process: WORKDIR/metrics.jsonl and TensorBoard events.

WORKDIR may be a gs:// bucket (vit_jax/paths.py): every logged step is flushed, which on
Cloud Storage uploads metrics.jsonl again, so the bucket is never more than one logging
step behind.
"""

from __future__ import annotations

import json
from typing import Any

import jax

from vit_jax import paths


class MetricWriter:
  """One JSON line per logged step plus TensorBoard scalars; a no-op off process 0."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    paths.makedirs(workdir)
    self._jsonl = paths.open_append(paths.join(workdir, "metrics.jsonl"))
    import tensorflow as tf  # noqa: PLC0415 (imported lazily: slow, and only process 0)
    self._tf = tf
    self._tb = tf.summary.create_file_writer(paths.join(paths.absolute(workdir), "tensorboard"))

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
  paths.write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
