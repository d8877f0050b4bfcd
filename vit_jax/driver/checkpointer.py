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

from vit_jax import paths
from vit_jax.checkpoint.orbax_io import CHECKPOINTS_DIR, EMA_PARAMS, ITEM_NAME, PARAMS
from vit_jax.driver.steps import TrainState


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

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
