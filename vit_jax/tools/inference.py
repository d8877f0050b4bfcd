"""A trained model for inference: loaded from a run's workdir or a checkpoint file.

    trained = inference.load_run("workdirs/vit_digits")      # config.json + checkpoint
    trained = inference.load(checkpoint_path="hf-hub:facebook/dinov2-small")  # says its model
    trained = inference.load_checkpoint("ViT-B_16.npz", "ViT-B_16", image_size=224)
    paths, raw = inference.read_inputs(["cat.jpg", "clips/"])  # files and folders
    inputs = trained.preprocess(raw)                # [N, h, w, 3] or [N, V, T, h, w, 3]
    probs = trained.probabilities(inputs)           # [N, num_classes]

A run's workdir holds `config.json` ({"config": ..., "data_info": {...,
"preprocessing": {...}}}) and Orbax checkpoints; the model is rebuilt from the
config exactly as the driver builds it, the weights are those the evaluator
scores (the EMA when the run kept one), and new inputs get the evaluation
preprocessing the run saved. A checkpoint file or folder gives its own model and
preprocessing (`checkpoint.load_pretrained`). Every loader returns the one bundle type,
`checkpoint.Pretrained`. Shared by `vit_jax.predict` and `vit_jax.visualize`.
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
from vit_jax.data import folder
from vit_jax.errors import ConfigError, DataError, MissingFileError
from vit_jax.models import packed, positions

# The bundle of a model, its params and its input: one type, `checkpoint.Pretrained`
# (this name stays for the callers that used it).
TrainedModel = checkpoint.Pretrained


def preprocess(trained: checkpoint.Pretrained, raw_examples: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 images [H, W, C] or videos [T, H, W, C] -> model inputs.

  Returns float32 [N, h, w, 3] (images) or [N, V, T, h, w, 3] (videos, V eval views).
  """
  for example in raw_examples:
    if (example.ndim == 4) != trained.is_video:
      what = trained.model_name or trained.source or "this"
      raise ConfigError(
          f"{what} is {'a video' if trained.is_video else 'an image'} model; got an input of "
          f"shape {example.shape}: pass {'videos' if trained.is_video else 'images'}.")
  return data.preprocess_for_eval(trained.data_config(), raw_examples)


def logits(trained: checkpoint.Pretrained, inputs: np.ndarray, batch_size: int = 64
           ) -> np.ndarray:
  """Logits [N, C] of preprocessed inputs; video views are averaged as in evaluation.

  Native resolution (`inputs` a list of images of their own sizes): packed as in
  evaluation (data/native.py), `batch_size` images per packed batch.
  """
  apply = _jitted_apply(trained.model)
  params = trained.device_params
  if isinstance(inputs, list):
    return _native_logits(trained, apply, params, inputs, batch_size)
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
    if trained.is_video:  # [B, V, T, h, w, 3] -> [B*V, T, h, w, 3], logits averaged over V
      b, v = x.shape[:2]
      out = apply(params, x.reshape((b * v,) + x.shape[2:])).reshape(b, v, -1).mean(1)
    else:
      out = apply(params, x)
    outputs.append(np.asarray(out)[:real])
  return np.concatenate(outputs)


def _native_logits(trained, apply, params, images: list[np.ndarray], batch_size: int
                   ) -> np.ndarray:
  """Logits [N, C] of images at their own sizes, packed into a fixed number of rows per
  chunk (one compiled shape for every chunk of the same size)."""
  c = data.config.as_config(trained.data_config())
  patch = data.config.patch_size(c)
  k = data.native.images_per_row(c, train=False)
  outputs = []
  n = len(images)
  chunk = -(-n // -(-n // batch_size)) if n else 1
  for start in range(0, n, chunk):
    part = images[start:start + chunk]
    tokens = [packed.patchify(x, patch) for x in part]
    grids = [(x.shape[0] // patch[0], x.shape[1] // patch[1]) for x in part]
    batch, slots = packed.pack_patches(tokens, [packed.grid_coords(g) for g in grids], grids,
                                       c.seq_len, k, num_rows=data.native.num_rows(c, chunk, False))
    out = np.asarray(apply(params, jax.tree.map(jnp.asarray, batch)))  # [R, k, C]
    outputs.append(np.stack([out[r, j] for r, j in slots]))
  return np.concatenate(outputs)


def with_resolution(trained: checkpoint.Pretrained, resolution: Optional[str],
                    max_num_patches: Optional[int] = None) -> checkpoint.Pretrained:
  """The bundle with its inputs at `resolution`: "native" (each image at its own aspect
  ratio under `max_num_patches` patches; default: a native run's budget, else the
  patches of the model's input size), "square", or None (as the run or file says)."""
  if resolution is None and max_num_patches is None:
    return trained
  if trained.is_video:
    raise ConfigError("--resolution and --max_num_patches apply to image models; this is a "
                      "video model.")
  config = trained.data_config()
  if resolution == "square":
    config["resolution_mode"] = "square"
    return dataclasses.replace(trained, eval_data=config)
  if resolution not in (None, "native"):
    raise ConfigError(f"--resolution={resolution}; use 'native' or 'square'.")
  patch = tuple(trained.model.patch_hw)
  size = config.get("image_size", 224)
  h, w = (size, size) if isinstance(size, int) else size
  was_native = config.get("resolution_mode") == "native"
  budget = max_num_patches or (config["max_num_patches"] if was_native
                               else (h // patch[0]) * (w // patch[1]))
  config.update(resolution_mode="native", patch_size=patch, max_num_patches=budget,
                seq_len=max(budget, config.get("seq_len", 0) if was_native else 0),
                max_images_per_row=config.get("max_images_per_row", 1) if was_native else 1)
  return dataclasses.replace(trained, eval_data=config)


def probabilities(trained: checkpoint.Pretrained, inputs: np.ndarray, batch_size: int = 64
                  ) -> np.ndarray:
  """Softmax of `logits`: [N, C]."""
  return np.asarray(jax.nn.softmax(logits(trained, inputs, batch_size), axis=-1))


_APPLY_CACHE: dict[int, Any] = {}


def _jitted_apply(model: nn.Module):
  key = id(model)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return _APPLY_CACHE[key]


def load_run(workdir: str) -> checkpoint.Pretrained:
  """The model of a training run: its config.json and its latest checkpoint
  (`checkpoint.load_pretrained(workdir)`, refusing anything but a run)."""
  if not checkpoint.is_run(workdir):
    raise MissingFileError(
        f"{os.path.join(workdir, 'config.json')} is not a training run's config: --workdir "
        "must be a run's directory (it holds config.json and checkpoints/); for a checkpoint "
        "file or folder use --checkpoint PATH.")
  return _on_device(checkpoint.load_pretrained(workdir))


def _on_device(trained: checkpoint.Pretrained) -> checkpoint.Pretrained:
  """The bundle with its params placed on the default device once (host numpy leaves
  would be copied in again on every forward pass: 344 MB for ViT-B/16, which made a
  one-image forward 270 ms instead of 165 on a 2-core CPU)."""
  return dataclasses.replace(trained, params=jax.device_put(trained.params))


def _input_size(params: Any, patch_size: Any, path: str) -> tuple[int, int]:
  """The input size of a checkpoint's position embedding (its prefix rows set aside)."""
  rows = params["Transformer"]["posembed_input"]["pos_embedding"].shape[1]
  prefix_rows = checkpoint.prefix_rows_from_params(params, rows)  # cls / dist / registers
  if not positions.is_square(rows - prefix_rows):
    raise ConfigError(f"{path}: {rows} position embeddings do not form a square grid; "
                      "pass image_size.")
  return positions.input_size_from_rows(rows, prefix_rows, patch_size)


def _fitted(params: Any, model: nn.Module, size: tuple[int, int]) -> Any:
  """`params` adapted to `model` at input `size` (the position embedding resized)."""
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + size + (3,))))
  fitted, _ = checkpoint.adapt(params, jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), init["params"]), log=False)
  return fitted


def load_checkpoint(path: str, model_name: str, *, image_size: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None,
                    **model_overrides: Any) -> checkpoint.Pretrained:
  """A checkpoint (any format `vit_jax.checkpoint.load` reads) as registered model
  `model_name`: for files that do not determine their model (this project's .npz of a
  later family's options, ...); `load_pretrained` reads the others whole.

  The class count comes from the checkpoint's head; the input size from its
  position embedding unless `image_size` is given (the embedding is then
  resized). Preprocessing: the whole image resized to the input size, pixels to
  [-1, 1] (the released checkpoints' convention).
  """
  params = checkpoint.load(path)
  num_classes = params["head"]["bias"].shape[0] if "head" in params else None
  kwargs = models.model_kwargs(model_name)
  kwargs.update(model_overrides)
  size = ((image_size, image_size) if image_size is not None
          else _input_size(params, kwargs["patch_size"], path))
  model = models.create_model(model_name, num_classes=num_classes, **model_overrides)
  params = _fitted(params, model, size)
  eval_data = {k: v for k, v in data.default_config().to_dict().items()
               if k in ("image_size", "resize_small", "value_range", "mean", "std")}
  eval_data["image_size"] = list(size)
  names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes or 0))
  return _on_device(checkpoint.Pretrained(
      model, params, checkpoint.preprocessing.from_data_config(eval_data, path), "linen",
      path, class_names=names, model_name=model_name, eval_data=eval_data))


def load(workdir: Optional[str] = None, checkpoint_path: Optional[str] = None,
         model_name: Optional[str] = None, image_size: Optional[int] = None
         ) -> checkpoint.Pretrained:
  """The model the CLIs' flags name: a run (`--workdir`), a checkpoint whose file says
  its model (`--checkpoint PATH`: timm / transformers / OpenCLIP files and folders,
  released .npz, hf-hub: ids), or a file read as a registered model (`--model NAME`)."""
  if bool(workdir) == bool(checkpoint_path):
    raise ConfigError("Pass exactly one of --workdir DIR or --checkpoint FILE (a file, folder "
                      "or hf-hub: id; with --model NAME for a file that does not say its "
                      "model).")
  if workdir:
    return load_run(workdir)
  if model_name:
    return load_checkpoint(checkpoint_path, model_name, image_size=image_size)
  found = checkpoint.load_pretrained(checkpoint_path)
  if image_size is None or found.is_video:
    return _on_device(found)
  size = (image_size, image_size)
  return _on_device(dataclasses.replace(
      found, params=_fitted(found.params, found.model, size),
      preprocessing=dataclasses.replace(found.preprocessing, input_size=size),
      eval_data=None))


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

