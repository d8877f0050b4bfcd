"""A run's workdir: its config.json, and whether a restart may resume its checkpoints.

WORKDIR/config.json holds
  config           the config of the latest start (what `predict` and `visualize` rebuild)
  data_info        classes, input shape and preprocessing of that start
  state_signature  "path": shape of every array of the training state (params,
                   optimizer state, ...) the checkpoints hold
  history          one entry per start: {"start_step", "started", "config"}

A restart with checkpoints in the workdir resumes them, so it must be the same run:
`check_resume` refuses (before anything is written) a config that changes what the
checkpoints mean (model, data, classes, seed) or the shape of the state they hold
(optimizer, EMA, freezing, clipping), and lists what differs. Changes that continue
the same run (total_steps, the lr schedule, evaluation and logging cadence, the
batch size, the devices) are allowed and logged.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any, Optional

import jax

from vit_jax import paths
from vit_jax.checkpoint import orbax_io
from vit_jax.driver.writer import write_json_atomic
from vit_jax.errors import WorkdirError

CONFIG_FILE = "config.json"

# Config keys (prefixes end in ".") whose change makes a restart another run. The model
# keys that change neither parameters nor results but only how they are computed are
# allowed (MODEL_RUNTIME_KEYS).
RUN_DEFINING = ("seed", "model_name", "model.", "data.dataset", "data.image_size",
                "data.num_frames", "data.stride", "data.train_split", "data.label_key",
                "data.image_key", "data.mean", "data.std", "data.value_range",
                "init_from.path")
MODEL_RUNTIME_KEYS = ("model.remat", "model.remat_policy", "model.attention_implementation",
                      "model.sow_attention_weights", "model.dtype")
DATA_INFO_KEYS = ("num_classes", "class_names", "input_shape", "is_video")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _jsonable(value: Any) -> Any:
  # Tuples become lists in config.json: compare in that form.
  return json.loads(json.dumps(value, default=str))


def state_signature(abstract_state: Any) -> dict[str, list[int]]:
  """"path": shape for every array of a (abstract) training state."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  return {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in leaves}


def read(workdir: str) -> Optional[dict[str, Any]]:
  """The workdir's config.json, or None when there is none."""
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    return None
  try:
    return json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path} is not valid JSON ({e}): fix or delete it (the checkpoints "
                       "are kept; a restart then resumes them unchecked), or use a new "
                       "--workdir.") from e


def latest_checkpoint_step(workdir: str) -> Optional[int]:
  """The latest complete checkpoint step in WORKDIR/checkpoints; None (nothing created)."""
  directory = paths.join(workdir, orbax_io.CHECKPOINTS_DIR)
  if not paths.is_dir(directory):
    return None
  steps = orbax_io.finished_steps(directory)
  return steps[-1] if steps else None


def _describe(key: str, old: Any, new: Any) -> str:
  return f"{key}: {old!r} -> {new!r}"


def config_changes(saved: Mapping[str, Any], config: Mapping[str, Any]
                   ) -> tuple[list[str], list[str]]:
  """(run-defining changes, allowed changes) from the saved config to `config`."""
  old, new = _flat(saved), _flat(_jsonable(config))
  defining, allowed = [], []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if a == b:
      continue
    is_defining = (any(key == k or (k.endswith(".") and key.startswith(k))
                       for k in RUN_DEFINING) and key not in MODEL_RUNTIME_KEYS)
    (defining if is_defining else allowed).append(_describe(key, a, b))
  return defining, allowed


def check_resume(workdir: str, saved: Optional[Mapping[str, Any]], config: Mapping[str, Any],
                 data_info: Mapping[str, Any], signature: Mapping[str, list[int]]) -> list[str]:
  """Raises WorkdirError unless `config` may resume the workdir's checkpoints.

  Returns the allowed changes (to log). Nothing is read but config.json.
  """
  if saved is None:
    return []  # checkpoints without a config.json (an older run): nothing to compare
  defining, allowed = config_changes(saved.get("config", {}), config)
  saved_info = saved.get("data_info", {})
  for key in DATA_INFO_KEYS:
    a, b = saved_info.get(key), _jsonable(data_info.get(key))
    if key in saved_info and a != b:
      shown = (a, b) if key != "class_names" else (f"{len(a)} names", f"{len(b)} names")
      defining.append(_describe(f"data_info.{key}", *shown))
  saved_signature = saved.get("state_signature")
  # The state check names what the config keys above do not explain (an optimizer,
  # EMA, clipping or freezing change), so it is reported only when they found nothing.
  if not defining and saved_signature is not None and dict(saved_signature) != dict(signature):
    first = next(k for k in sorted(set(saved_signature) | set(signature))
                 if saved_signature.get(k) != signature.get(k))
    defining.append(f"the training state: {first} is {saved_signature.get(first, 'absent')} in "
                    f"the checkpoints and {signature.get(first, 'absent')} in this run "
                    "(the optimizer, EMA, clipping or freezing settings changed)")
  if defining:
    abs_workdir = paths.absolute(workdir)
    raise WorkdirError(
        f"{abs_workdir} holds checkpoints of another run; this config differs in what "
        "they hold:\n" + "\n".join(f"  {line}" for line in defining) +
        ("\nalso changed: " + "; ".join(allowed) if allowed else "") +
        f"\nUse a new --workdir, or --config.init_from.path={abs_workdir} to fine-tune "
        "from it. Nothing in the workdir was changed.")
  return allowed


def write(workdir: str, saved: Optional[Mapping[str, Any]], config: Mapping[str, Any],
          data_info: Mapping[str, Any], signature: Mapping[str, list[int]],
          start_step: int) -> None:
  """Writes config.json (atomically, process 0) with this start added to the history."""
  history = list((saved or {}).get("history", []))
  if saved and not history and "config" in saved:  # a config.json from before the history
    history.append({"start_step": None, "started": None, "config": saved["config"]})
  config = _jsonable(config)
  history.append({"start_step": start_step,
                  "started": datetime.datetime.now(datetime.UTC).isoformat(),
                  "config": config})
  write_json_atomic(paths.join(workdir, CONFIG_FILE), {
      "config": config, "data_info": _jsonable(data_info),
      "state_signature": dict(signature), "history": history})


def check_writable(workdir: str) -> None:
  """Raises WorkdirError when a run could not write to `workdir` (checked before it starts).

  A file in its place, or a local folder (or the nearest existing parent of a new one)
  that this user may not write to. Remote (gs://) workdirs are not checked here.
  """
  if paths.is_remote(workdir):
    return
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--workdir {workdir} is a file, not a directory: pass a directory "
                       "(a new one is created).")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"--workdir {workdir}: {existing} is a file, so the directory cannot "
                       "be created; pass another --workdir.")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is" if existing == path else f"cannot be created: {existing} is"
    raise WorkdirError(f"--workdir {workdir} {what} read-only for this user: pass a "
                       "writable --workdir (or fix its permissions).")
