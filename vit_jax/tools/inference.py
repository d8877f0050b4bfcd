"""A trained model for inference: loaded from a run's workdir or a checkpoint file.

    trained = inference.load_run("workdirs/vit_digits")      # config.json + checkpoint
    trained = inference.load_checkpoint("ViT-B_16.npz", "ViT-B_16", image_size=224)
    paths, raw = inference.read_inputs(["cat.jpg", "clips/"])  # files and folders
    inputs = trained.preprocess(raw)                # [N, h, w, 3] or [N, V, T, h, w, 3]
    probs = trained.probabilities(inputs)           # [N, num_classes]

A run's workdir holds `config.json` ({"config": ..., "data_info": {...,
"preprocessing": {...}}}) and Orbax checkpoints; the model is rebuilt from the
config exactly as the driver builds it, the weights are those the evaluator
scores (the EMA when the run kept one), and new inputs get the evaluation
preprocessing the run saved. Shared by `vit_jax.predict` and `vit_jax.visualize`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import checkpoint, data, models
from vit_jax.checkpoint import orbax_io
from vit_jax.data import folder
from vit_jax.driver import config as config_lib
from vit_jax.driver import workdir as workdir_lib
from vit_jax.errors import ConfigError, DataError, MissingFileError


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model, its parameters and how its inputs are prepared.

  Attributes:
    model: the linen module.
    params: its parameters, placed on the default device once when the TrainedModel is
      made (host numpy leaves would be copied in again on every forward pass: 344 MB
      for ViT-B/16, which made a one-image forward 270 ms instead of 165 on a 2-core CPU).
    class_names: one name per output class.
    preprocessing: the data keys of `vit_jax.data.preprocess_for_eval`.
    is_video: the model takes clips [T, H, W, 3].
    model_name: the registered name it was built from.
  """

  model: nn.Module
  params: Any
  class_names: tuple[str, ...]
  preprocessing: dict[str, Any]
  is_video: bool
  model_name: str

  def __post_init__(self):
    object.__setattr__(self, "params", jax.device_put(self.params))

  def preprocess(self, raw_examples: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 images [H, W, C] or videos [T, H, W, C] -> model inputs.

    Returns float32 [N, h, w, 3] (images) or [N, V, T, h, w, 3] (videos, V eval views).
    """
    for example in raw_examples:
      if (example.ndim == 4) != self.is_video:
        raise ConfigError(
            f"{self.model_name} is {'a video' if self.is_video else 'an image'} model; got an "
            f"input of shape {example.shape}: pass {'videos' if self.is_video else 'images'}.")
    return data.preprocess_for_eval(self.preprocessing, raw_examples)

  def logits(self, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits [N, C] of preprocessed inputs; video views are averaged as in evaluation."""
    apply = _jitted_apply(self.model)
    outputs = []
    # Equal chunks, the last padded: one compiled shape for any count (100 inputs at
    # batch_size 64 run as 2 x 50, not 64 + 36 with a second compilation).
    n = len(inputs)
    chunk = -(-n // -(-n // batch_size)) if n else 0
    for start in range(0, n, chunk or 1):
      x = inputs[start:start + chunk]
      real = len(x)
      if real < chunk:
        x = np.concatenate([x, np.zeros((chunk - real,) + x.shape[1:], x.dtype)])
      x = jnp.asarray(x)
      if self.is_video:  # [B, V, T, h, w, 3] -> [B*V, T, h, w, 3], logits averaged over V
        b, v = x.shape[:2]
        out = apply(self.params, x.reshape((b * v,) + x.shape[2:])).reshape(b, v, -1).mean(1)
      else:
        out = apply(self.params, x)
      outputs.append(np.asarray(out)[:real])
    return np.concatenate(outputs)

  def probabilities(self, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax of `logits`: [N, C]."""
    return np.asarray(jax.nn.softmax(self.logits(inputs, batch_size), axis=-1))


_APPLY_CACHE: dict[int, Any] = {}


def _jitted_apply(model: nn.Module):
  key = id(model)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return _APPLY_CACHE[key]


def load_run(workdir: str) -> TrainedModel:
  """The model of a training run: its config.json and its latest checkpoint."""
  saved = workdir_lib.read(workdir)
  if saved is None:
    raise MissingFileError(
        f"{os.path.join(workdir, workdir_lib.CONFIG_FILE)} not found: --workdir must be a "
        "training run's directory (it holds config.json and checkpoints/); for a bare "
        "checkpoint file use --checkpoint FILE --model NAME.")
  config, info = saved["config"], saved["data_info"]
  # Inference needs no remat (nothing is kept for a backward pass): "auto" -> off.
  model = config_lib.build_model(dict(config, model=config.get("model", {})),
                                 info["num_classes"])
  # The weights the evaluator scores (the EMA when the run kept one).
  params, _ = orbax_io.load_orbax(workdir, entry="eval")
  return TrainedModel(model=model, params=params, class_names=tuple(info["class_names"]),
                      preprocessing=dict(info["preprocessing"]), is_video=info["is_video"],
                      model_name=config["model_name"])


def load_checkpoint(path: str, model_name: str, *, image_size: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None,
                    **model_overrides: Any) -> TrainedModel:
  """A checkpoint file (any format `vit_jax.checkpoint.load` reads) as model `model_name`.

  The class count comes from the checkpoint's head; the input size from its
  position embedding unless `image_size` is given (the embedding is then
  resized). Preprocessing: the whole image resized to the input size, pixels to
  [-1, 1] (the released checkpoints' convention).
  """
  params = checkpoint.load(path)
  num_classes = params["head"]["bias"].shape[0] if "head" in params else None
  kwargs = models.model_kwargs(model_name)
  kwargs.update(model_overrides)
  patch = kwargs["patch_size"]
  patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
  if image_size is None:
    tokens = params["Transformer"]["posembed_input"]["pos_embedding"].shape[1]
    has_cls = checkpoint.prefix_rows_from_params(params, tokens)  # cls / dist / register rows
    side = int(round((tokens - has_cls) ** 0.5))
    if side * side != tokens - has_cls:
      raise ConfigError(f"{path}: {tokens} position embeddings do not form a square grid; "
                       "pass image_size.")
    size = (side * patch[0], side * patch[1])
  else:
    size = (image_size, image_size)
  model = models.create_model(model_name, num_classes=num_classes, **model_overrides)
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + size + (3,))))
  params, _ = checkpoint.adapt(params, jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), init["params"]), log=False)
  preprocessing = {k: v for k, v in data.default_config().to_dict().items()
                   if k in ("image_size", "resize_small", "value_range", "mean", "std")}
  preprocessing["image_size"] = list(size)
  names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes or 0))
  return TrainedModel(model=model, params=params, class_names=names,
                      preprocessing=preprocessing, is_video=False, model_name=model_name)


def load(workdir: Optional[str] = None, checkpoint_path: Optional[str] = None,
         model_name: Optional[str] = None, image_size: Optional[int] = None) -> TrainedModel:
  """`load_run(workdir)`, or `load_checkpoint(checkpoint_path, model_name)` (the CLIs' flags)."""
  if bool(workdir) == bool(checkpoint_path):
    raise ConfigError("Pass exactly one of --workdir DIR or --checkpoint FILE --model NAME.")
  if workdir:
    return load_run(workdir)
  if not model_name:
    raise ConfigError("--checkpoint needs --model NAME (e.g. ViT-B_16): a checkpoint file "
                     "does not record its architecture.")
  return load_checkpoint(checkpoint_path, model_name, image_size=image_size)


def top_k(probabilities: np.ndarray, class_names: Sequence[str],
          k: int) -> list[list[tuple[str, float]]]:
  """[N, C] probabilities -> per input, the k most probable (class name, probability)."""
  k = min(k, probabilities.shape[-1])
  order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
  return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(probabilities, order)]


def list_inputs(paths: Sequence[str]) -> list[str]:
  """Files named, and the image and video files found (recursively, sorted) in folders."""
  found = []
  extensions = folder.IMAGE_EXTENSIONS + folder.VIDEO_EXTENSIONS
  for path in paths:
    if os.path.isdir(path):
      for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(extensions)]
    elif os.path.exists(path):
      found.append(path)
    else:
      raise MissingFileError(f"{path}: no such file or directory.")
  if not found:
    raise ConfigError(f"No image or video files ({', '.join(extensions)}) in {list(paths)}.")
  return found


def read_inputs(paths: Sequence[str], failed: Optional[list[tuple[str, str]]] = None
                ) -> tuple[list[str], list[np.ndarray]]:
  """(files, decoded uint8 arrays) for files and folders of images or videos.

  A file that does not decode raises DataError naming it; when a `failed` list is
  given it is appended there as (path, reason) and skipped instead.
  """
  kept, raw = [], []
  for path in list_inputs(paths):
    try:
      raw.append(data.decode_file(path))
    except Exception as e:  # PIL and PyAV raise many types for broken files
      if failed is None:
        raise DataError(f"Could not decode {path}: {type(e).__name__}: {e}") from e
      failed.append((path, f"{type(e).__name__}: {e}"))
      continue
    kept.append(path)
  return kept, raw

