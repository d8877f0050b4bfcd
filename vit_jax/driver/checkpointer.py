"""Orbax checkpoints of training runs in WORKDIR/checkpoints/<step>/state.

The directory names and entry names are `vit_jax.checkpoint.orbax_io`'s, which reads
these checkpoints back for fine-tuning, conversion and inference.

Saves are asynchronous (training continues while files are written) and atomic
(Orbax writes to a temporary directory and renames it when complete, so a crash
never leaves a half-written step behind). Kept: the latest `keep` steps plus the
`keep_best` steps with the best evaluation metric.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from vit_jax import errors, paths
from vit_jax.checkpoint import orbax_io
from vit_jax.checkpoint.orbax_io import CHECKPOINTS_DIR, EMA_PARAMS, ITEM_NAME, PARAMS
from vit_jax.driver import cluster
from vit_jax.driver.steps import TrainState

DAMAGED_SUFFIX = ".damaged"  # a step that did not restore, renamed (never deleted)


def step_of(path: str) -> int | None:
  """The training step of a run's checkpoint that `path` names (a workdir, its
  checkpoints/ directory, a step), or None for anything else (an .npz, a .safetensors)."""
  try:
    item = orbax_io.resolve_item_dir(path)
  except errors.UserError:
    return None
  item = paths.path(item)
  for name in (item.parent.name, item.name):
    if name.isdigit():
      return int(name)
  return None


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  line = text.splitlines()[0] if text else ""
  return f"{type(error).__name__}: {line[:300]}"


def state_to_dict(state: TrainState) -> dict[str, Any]:
  """The tree that is written: {params, opt_state, step, rng, data_position[, ema_params]}."""
  out = {PARAMS: state.params, "opt_state": state.opt_state, "step": state.step,
         "rng": state.rng, "data_position": state.step}
  if state.ema_params is not None:
    out[EMA_PARAMS] = state.ema_params
  return out


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with this project's policies."""

  def __init__(self, workdir: str, *, keep: int = 2, keep_best: int = 1,
               best_metric: str = "top1", async_save: bool = True):
    self.directory = paths.join(paths.absolute(workdir), CHECKPOINTS_DIR)
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(ITEM_NAME,))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, metrics: dict[str, float] | None = None,
           force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(**{ITEM_NAME: ocp.args.StandardSave(
        state_to_dict(state))}), metrics=metrics, force=force)
    logging.info("Checkpoint of step %d queued in %s", step, self.directory)

  def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    """Restores into the shardings of `abstract_state` (ShapeDtypeStructs)."""
    step = self.latest_step() if step is None else step
    target = state_to_dict(abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        ITEM_NAME: ocp.args.StandardRestore(target)}))[ITEM_NAME]
    logging.info("Restored step %d from %s", step, self.directory)
    return TrainState(step=restored["step"], params=restored[PARAMS],
                      opt_state=restored["opt_state"], rng=restored["rng"],
                      ema_params=restored.get(EMA_PARAMS))

  def restore_intact(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    """`restore`, falling back from a damaged step to the newest older one that restores.

    A step whose files were lost or cut short (a deleted array file, a missing
    `_METADATA` or `manifest.ocdbt`) makes Orbax raise deep inside TensorStore. Such a
    step is logged, renamed to `<step>.damaged` (kept for inspection, never deleted;
    Orbax no longer lists it, so training can write that step again) and the next older
    step is tried. Raises WorkdirError when no step restores.
    """
    steps = sorted((s for s in self.manager.all_steps()
                    if step is None or s <= step), reverse=True)
    damaged = []
    for candidate in steps:
      try:
        state = self.restore(abstract_state, candidate)
      except errors.UserError:
        raise
      except Exception as e:  # noqa: BLE001 (Orbax, TensorStore and tree errors alike)
        reason = _first_line(e)
        logging.error("The checkpoint of step %d in %s is damaged and cannot be restored "
                      "(%s).", candidate, self.directory, reason)
        damaged.append((candidate, reason))
        continue
      if damaged:
        self._set_aside([s for s, _ in damaged])
        logging.warning("Resumed from step %d, the newest intact checkpoint; damaged: %s "
                        "(renamed to <step>.damaged, nothing deleted).", candidate,
                        ", ".join(str(s) for s, _ in damaged))
      return state
    listed = "\n".join(f"  step {s}: {reason}" for s, reason in damaged) or "  (none)"
    raise errors.WorkdirError(
        f"No checkpoint in {self.directory} can be restored:\n{listed}\nMove the directory "
        "aside to start over in this workdir, or use a new --workdir.")

  def _set_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      for s in steps:
        paths.path(paths.join(self.directory, str(s))).rename(
            paths.join(self.directory, f"{s}{DAMAGED_SUFFIX}"))
    cluster.barrier(f"damaged checkpoints {steps} set aside", timeout_s=120)
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
