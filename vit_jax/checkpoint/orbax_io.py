"""This project's Orbax training checkpoints: restores the params only, as host numpy.

The training driver saves with

    mngr = ocp.CheckpointManager(f"{workdir}/checkpoints", ...)
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

where `state = {"params": ..., "opt_state": ..., "step": ..., "rng": ..., ...}`,
so one step lives at `WORKDIR/checkpoints/<step>/state/`. Only `params` is read
(the optimizer state of a 1B model is twice its size), into numpy arrays without
any sharding, so any process with any device count can read any checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import jax
import numpy as np

from vit_jax import paths
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models import layout

# The layout of a training run's checkpoints; vit_jax.driver.checkpointer writes it.
CHECKPOINTS_DIR = "checkpoints"  # WORKDIR/checkpoints/<step>/
ITEM_NAME = "state"  # WORKDIR/checkpoints/<step>/state/: the TrainState dict
PARAMS = "params"
EMA_PARAMS = "ema_params"  # present only in runs with ema_decay > 0


def eval_params_entry(entries) -> str:
  """The entry the evaluator scores: the EMA when the run kept one, else the params."""
  return EMA_PARAMS if EMA_PARAMS in entries else PARAMS


def finished_steps(directory: str) -> list[int]:
  """The steps with a complete checkpoint in a `checkpoints/` directory, ascending."""
  # Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when
  # complete, so digit-only names are the finished steps.
  return sorted(int(name) for name in paths.listdir(directory)
                if name.isdigit() and paths.is_dir(paths.join(directory, name)))


def is_orbax_item(path: str) -> bool:
  return paths.exists(paths.join(path, "_METADATA"))


def resolve_item_dir(path: str) -> str:
  """WORKDIR, WORKDIR/checkpoints (latest step), a step dir or the item dir -> item dir."""
  original = path
  if paths.is_dir(paths.join(path, CHECKPOINTS_DIR)):
    path = paths.join(path, CHECKPOINTS_DIR)
  if not is_orbax_item(path) and not paths.is_dir(paths.join(path, ITEM_NAME)):
    steps = finished_steps(path) if paths.is_dir(path) else []
    if steps:
      path = paths.join(path, str(steps[-1]))
  if paths.is_dir(paths.join(path, ITEM_NAME)):
    path = paths.join(path, ITEM_NAME)
  if not is_orbax_item(path):
    raise CheckpointError(
        f"{original}: not an Orbax checkpoint: expected a training workdir, its "
        f"`{CHECKPOINTS_DIR}/` directory (the latest step is read), a step directory "
        f"`{CHECKPOINTS_DIR}/<step>/`, or its `{ITEM_NAME}/` item (holding `_METADATA`).")
  return path


@contextlib.contextmanager
def _quiet_absl():
  # Reading an item directly makes Orbax warn that the step's _CHECKPOINT_METADATA
  # is not in the item dir; it is one level up, and we need nothing from it.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def load_orbax(path: str, entry: str = PARAMS) -> tuple[dict[str, Any], str]:
  """Restores one params entry of an Orbax checkpoint as per-layer numpy params.

  Args:
    path: anything `resolve_item_dir` takes.
    entry: PARAMS, EMA_PARAMS, or "eval" for what the evaluator scores
      (`eval_params_entry`).

  Returns:
    (params, 'orbax').
  """
  import orbax.checkpoint as ocp  # slow to import; only Orbax users pay for it

  item = paths.absolute(resolve_item_dir(path))
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    with _quiet_absl():
      metadata = checkpointer.metadata(item).item_metadata.tree
  except Exception as e:  # orbax raises a zoo of types for corrupt metadata
    raise CheckpointError(f"{item}: cannot read the Orbax metadata ({type(e).__name__}: {e}).") \
        from e
  if entry == "eval":
    entry = eval_params_entry(metadata)
  if entry in metadata:
    wanted = entry
  elif entry == PARAMS and "embedding" in metadata:
    wanted = None  # params saved directly as the item
  else:
    raise CheckpointError(
        f"{item}: the Orbax item has no `{entry}` entry (found {sorted(metadata)}); expected "
        "the training state dict {'params': ..., 'opt_state': ..., ...}.")
  params_meta = metadata[wanted] if wanted else metadata
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_meta)
  placeholder = jax.tree.map(lambda _: np.zeros((), np.float32), params_meta)
  if wanted:
    as_numpy, placeholder = {wanted: as_numpy}, {wanted: placeholder}
  try:
    with _quiet_absl():
      restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(
          item=placeholder, restore_args=as_numpy, partial_restore=True))
  except Exception as e:
    raise CheckpointError(f"{item}: restoring the params failed ({type(e).__name__}: {e}).") \
        from e
  params = restored[wanted] if wanted else restored
  params = jax.tree.map(np.asarray, params)
  if layout.is_stacked(params):
    params = layout.unstack_layers(params)
  return params, "orbax"
