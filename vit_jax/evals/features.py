"""Frozen features of a backbone: computed from outside the model, extracted exactly, cached.

`compute(model, params, inputs, names)` runs the model once and returns the named
features (vit_jax.evals.registry: pooled, cls, patch_mean, cls_patch_mean, cls_lastN,
cls_lastN_patch_mean, tokens). What the model does not return (the encoder's tokens,
every block's output) is read with flax's method interception around the model's own
submodules (`nn.intercept_methods`), so the models stay as they are:

  ViT                     encoder "Transformer" -> [B, P + N, D]; blocks encoderblock_i
  ViViT spatio-temporal   encoder "Transformer" -> [B, P + t*n, D]
  ViViT factorised        encoder "SpatialTransformer" -> [B*t, P + n, D] (per frame:
                          the class token is averaged over the t frames, the patch
                          tokens are concatenated to [B, t*n, D])
  VideoPrism              no encoder of those names: its tokens are the temporal
                          encoder's [B, t*n, D], from the model (features=True)

`pooled` is what the head reads (ViT: `features=True`; ViViT: the input of
`output_projection`). Models with scanned layers are unstacked first (blocks under
nn.scan cannot be intercepted one by one).

Shapes: images [B, H, W, 3] -> vectors [B, F], tokens [B, L, D]; videos with V eval
views [B, V, T, H, W, 3] -> vectors averaged over the views [B, F], tokens [B, V, L, D].
Native resolution (packed batches, vit_jax/data/native.py): `pooled` only, each image's
own (VisionTransformer.packed, features=True): [R, k, D] -> [R * k, D], one per slot.

`extract` reads one split with the evaluation pipeline (padded batches, `mask`), sharded
over every device of every host, and keeps each real example exactly once, in the split's
order on any number of hosts.
`FeatureCache` stores each (backbone, data, split, feature) in the workdir under a key of
all of them, so a second protocol or a sweep reads it back; anything that differs gives
another key and a recomputation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from vit_jax import models, paths
from vit_jax.driver import parallel
from vit_jax.errors import ConfigError
from vit_jax.evals import registry
from vit_jax.models import packed

_ENCODERS = ("Transformer", "SpatialTransformer")
_HEADS = ("head", "output_projection")
# Bump when what a cached file holds changes meaning.
CACHE_VERSION = 1
CACHE_DIR = "feature_cache"
# config.data keys that change nothing in evaluation inputs (training-only or runtime).
_NOT_IN_FEATURES = ("train_crop", "inception_area", "flip", "augment", "repeated_augment",
                    "scale_jitter", "shuffle_buffer", "train_shards", "cache", "prefetch",
                    "skip_bad_examples", "min_frames")


def _classifier(model: nn.Module) -> str:
  return model.classifier_in_use if isinstance(model, models.VideoTransformer) else (
      model.classifier)


def prepare(model: nn.Module, params: Any) -> tuple[nn.Module, Any]:
  """The model and params with per-layer blocks (scanned layers unstacked)."""
  if model.options.scan_layers:
    from vit_jax.models import layout  # noqa: PLC0415

    return model.clone(scan_layers=False), layout.unstack_layers(params)
  return model, params


def check_supported(model: nn.Module, names: Sequence[str]) -> None:
  """ConfigError for a feature this model cannot give (before anything is computed)."""
  classifier = _classifier(model)
  is_video = isinstance(model, models.VideoTransformer)
  for name in names:
    kind, _, _ = registry.parse_feature(name)
    if (name.startswith("cls") and not model.options.has_class_token(classifier)):
      raise ConfigError(f"Feature {name!r} reads the class token, and this model has none "
                        f"(classifier={classifier!r}): use 'pooled' or 'patch_mean'.")
    if kind == "last" and is_video and model.variant != "spatio_temporal":
      raise ConfigError(f"Feature {name!r} is implemented for images and the spatio-temporal "
                        f"ViViT, not variant {model.variant!r}: use 'pooled' or 'cls'.")
    if classifier == "unpooled" and name == "pooled":
      raise ConfigError("classifier='unpooled' has no pooled feature: use 'cls' or "
                        "'patch_mean'.")


def compute(model: nn.Module, params: Any, inputs: jax.Array | packed.PackedPatches,
            names: Sequence[str]) -> dict[str, jax.Array]:
  """The named features of `inputs` from one forward pass (see the module docstring)."""
  if isinstance(inputs, packed.PackedPatches):
    others = [n for n in names if n != "pooled"]
    if others:  # registry.native_problem refuses these at config validation
      raise ConfigError(f"Features {others} are not per image in a packed batch: use "
                        "'pooled' with data.resolution_mode='native'.")
    pooled = model.apply({"params": params}, inputs, features=True)["pooled"]  # [R, k, D]
    return {"pooled": pooled.reshape(-1, pooled.shape[-1]).astype(jnp.float32)}
  is_video = isinstance(model, models.VideoTransformer)
  views = None
  if is_video and inputs.ndim == 6:  # [B, V, T, H, W, C] -> [B*V, T, H, W, C]
    views = inputs.shape[1]
    inputs = inputs.reshape((-1,) + inputs.shape[2:])
  batch = inputs.shape[0]
  last_n = max([registry.parse_feature(n)[1] for n in names] + [0])
  encoder = "SpatialTransformer" if is_video and model.variant in (
      "factorised_encoder", "frame_average") else "Transformer"
  rec: dict[str, Any] = {"blocks": []}

  def interceptor(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    if context.method_name != "__call__" or not path:
      return next_fun(*args, **kwargs)
    if path == (encoder,):
      out = next_fun(*args, **kwargs)
      rec.setdefault("tokens", out)
      return out
    if len(path) == 2 and path[0] == encoder and path[1].startswith("encoderblock_"):
      out = next_fun(*args, **kwargs)
      rec["blocks"].append(out[0])
      return out
    if path == (encoder, "encoder_norm") and last_n:
      # DINOv2's intermediate layers go through the final norm too: the same LayerNorm,
      # applied functionally with its parameters (a bound module cannot be called twice).
      m = context.module
      norm = nn.LayerNorm(epsilon=m.epsilon, dtype=m.dtype, param_dtype=m.param_dtype,
                          use_bias=m.use_bias, use_scale=m.use_scale)
      rec["normed"] = [norm.apply({"params": m.variables["params"]}, b)
                       for b in rec["blocks"][-last_n:]]
    if len(path) == 1 and path[0] in _HEADS:
      rec["pooled"] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    if is_video and model.variant == models.vivit.FACTORISED_TOKENS:
      found = model.apply({"params": params}, inputs, features=True)
      pooled = found["pooled"]
      rec["tokens"] = found["patch_tokens"]  # no prefix tokens
    elif is_video:
      out = model.apply({"params": params}, inputs)
      pooled = rec.get("pooled", out) if model.num_classes is not None else out
    else:
      pooled = model.apply({"params": params}, inputs, features=True)["pooled"]
  prefix = model.options.num_prefix_tokens(_classifier(model))

  def per_example(x):  # [B*t, L, D] -> cls [B, D] averaged over t, patches [B, t*L', D]
    t = x.shape[0] // batch
    cls = x[:, 0].reshape(batch, t, -1).mean(axis=1) if prefix else None
    patches = x[:, prefix:].reshape(batch, -1, x.shape[-1])
    return cls, patches

  cls, patches = per_example(rec["tokens"])
  if last_n:
    blocks = rec.get("normed") or rec["blocks"][-last_n:]  # fc_norm models: no encoder_norm
    if len(blocks) < last_n:
      raise ConfigError(f"cls_last{last_n}: the model has only {len(rec['blocks'])} blocks.")
    last_cls = [per_example(b)[0] for b in blocks]
  out = {}
  for name in names:
    kind, n, with_mean = registry.parse_feature(name)
    if name == "pooled":
      f = pooled
    elif name == "cls":
      f = cls
    elif name == "patch_mean":
      f = patches.mean(axis=1)
    elif name == "cls_patch_mean":
      f = jnp.concatenate([cls, patches.mean(axis=1)], axis=-1)
    elif kind == "last":
      parts = last_cls[-n:] + ([patches.mean(axis=1)] if with_mean else [])
      f = jnp.concatenate(parts, axis=-1)
    else:  # tokens
      f = patches
    f = f.astype(jnp.float32)
    if views is not None:
      f = f.reshape((-1, views) + f.shape[1:])  # [B*V, ...] -> [B, V, ...]
      if name != registry.TOKENS:
        f = f.mean(axis=1)  # the views' features averaged, as the video evaluators do
    out[name] = f
  return out


def _to_host(tree: Any) -> Any:
  """Global arrays -> numpy of the whole array on every process."""
  if all(x.is_fully_addressable for x in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def extract(model: nn.Module, params: Any, data_config: Mapping[str, Any], split: str,
            names: Sequence[str], *, batch_size: int, mesh: jax.sharding.Mesh
            ) -> dict[str, np.ndarray]:
  """Features of every example of `split`, once each: {name: [N, ...], "label": [N]}.

  Batches are sharded over every device of `mesh`; each process reads its share of the
  split; the padding the eval pipeline adds is dropped by its mask; rows come back in
  the split's order (process shares are contiguous and in order).
  """
  from vit_jax import data  # noqa: PLC0415 (TensorFlow only where data is read)
  from vit_jax.data import distribute  # noqa: PLC0415

  names = tuple(names)
  sharding = parallel.batch_sharding(mesh)
  local = distribute.local_batch_size(batch_size, sharding)
  fn = jax.jit(lambda p, x: compute(model, p, x, names))
  parts: dict[str, list[np.ndarray]] = {k: [] for k in names + ("label", "process", "position")}
  for step, batch in enumerate(data.eval_iterator(data_config, global_batch_size=batch_size,
                                                  sharding=sharding, split=split)):
    # Where each example came from: (process, position in its share). Shares are
    # contiguous ranges of the split in order, so sorting by them gives the split's order
    # whatever the number of processes (the protocols that sample, few-shot and the
    # held-out part of a linear sweep, then draw the same examples on 1 host and on N).
    if data.native.is_packed(batch):
      # Per image slot [R, k] (R rows over all processes), flattened as the features are;
      # the packer recorded each image's place in its process's batch.
      out = fn(params, data.native.packed_patches(batch))
      rows, k = batch["label"].shape
      process = np.full((rows // jax.process_count(), k), jax.process_index(), np.int32)
      host = _to_host({**out, **distribute.to_global({"process": process}, sharding, rows),
                       **{key: batch[key] for key in ("label", "mask", "position")}})
      host = {key: np.reshape(v, (-1,) + np.shape(v)[2:]) if key not in out else v
              for key, v in host.items()}
      host["position"] = host["position"] + step * local
    else:
      out = fn(params, batch["image"])
      origin = distribute.to_global(
          {"process": np.full(local, jax.process_index(), np.int32),
           "position": np.arange(step * local, (step + 1) * local, dtype=np.int32)},
          sharding, batch_size)
      host = _to_host({**out, **origin, "label": batch["label"], "mask": batch["mask"]})
    keep = np.asarray(host["mask"], bool)
    for key in parts:
      parts[key].append(np.asarray(host[key])[keep])
  if not parts["label"]:
    raise ConfigError(f"The split {split!r} of {data_config['dataset']!r} is empty: check "
                      "the evaluator's data.train_split / data.eval_split.")
  out = {k: np.concatenate(v) for k, v in parts.items()}
  order = np.lexsort((out.pop("position"), out.pop("process")))
  return {k: v[order] for k, v in out.items()}


def params_fingerprint(model: nn.Module, params: Any) -> str:
  """A hash of the module's definition and every parameter's path, dtype, shape and bytes."""
  h = hashlib.sha256(repr(model).encode())
  leaves = jax.tree_util.tree_flatten_with_path(_to_host(params))[0]
  for path, leaf in leaves:
    leaf = np.ascontiguousarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def data_fingerprint(data_config: Mapping[str, Any], split: str) -> dict[str, Any]:
  """What decides the evaluation inputs of `split`: dataset, data dir, preprocessing."""
  from vit_jax.data import config as data_config_lib  # noqa: PLC0415

  c = data_config_lib.as_config(data_config).to_dict()
  c["data_dir"] = os.path.abspath(data_config_lib.resolve_data_dir(c))
  out = {k: v for k, v in c.items() if k not in _NOT_IN_FEATURES + ("train_split",
                                                                     "eval_split")}
  out["split"] = split
  return json.loads(json.dumps(out, default=list))


class FeatureCache:
  """Features on disk under DIRECTORY/<key>.npz, key = hash(backbone, data, split, name).

  Each file has a `<key>.json` beside it with what the key was made of. A directory of
  None keeps nothing (evaluation during training: the parameters change every time).
  Only process 0 writes; files appear by rename, so a killed run leaves no half file.
  """

  def __init__(self, directory: str | None):
    self.directory = directory
    self.hits: list[str] = []  # feature files read back (for logs and tests)
    self.computed: list[str] = []  # features extracted

  def _key(self, backbone: str, data: dict[str, Any], name: str) -> tuple[str, dict]:
    parts = {"version": CACHE_VERSION, "backbone": backbone, "data": data, "feature": name}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32], parts

  def load(self, backbone: str, data: dict[str, Any], name: str) -> dict[str, np.ndarray] | None:
    if self.directory is None:
      return None
    key, _ = self._key(backbone, data, name)
    path = paths.join(self.directory, key + ".npz")
    if not paths.exists(path):
      return None
    with paths.path(path).open("rb") as f:
      loaded = np.load(f)
      return {"features": loaded["features"], "label": loaded["label"]}

  def save(self, backbone: str, data: dict[str, Any], name: str, features: np.ndarray,
           labels: np.ndarray) -> None:
    if self.directory is None or jax.process_index() != 0:
      return
    key, parts = self._key(backbone, data, name)
    paths.makedirs(self.directory)
    final = paths.join(self.directory, key + ".npz")
    tmp = final + ".tmp"
    with paths.path(tmp).open("wb") as f:
      np.savez(f, features=features, label=labels)
    paths.path(tmp).replace(final)
    paths.write_text_atomic(paths.join(self.directory, key + ".json"),
                            json.dumps({**parts, "shape": list(features.shape)}, indent=1))


class FeatureSource:
  """A backbone's features on splits of a dataset: from the cache, or extracted once.

  `get(data_config, split, names)` extracts the names the cache lacks in one pass and
  keeps every result in memory for the other evaluators of the same round.
  """

  def __init__(self, model: nn.Module, params: Any, *, mesh: jax.sharding.Mesh,
               cache: FeatureCache, fingerprint: Callable[[], str]):
    self.model, self.params = prepare(model, params)
    self.mesh = mesh
    self.cache = cache
    self._fingerprint = fingerprint
    self._fp: str | None = None
    self._memory: dict[tuple[str, str], dict[str, np.ndarray]] = {}

  @property
  def fingerprint(self) -> str:
    if self._fp is None:
      self._fp = self._fingerprint()
    return self._fp

  def get(self, data_config: Mapping[str, Any], split: str, names: Sequence[str], *,
          batch_size: int, use_cache: bool = True) -> dict[str, np.ndarray]:
    """{name: [N, ...], "label": [N]} for `split`."""
    check_supported(self.model, names)
    data_key = data_fingerprint(data_config, split)
    mem_key = json.dumps(data_key, sort_keys=True)
    found: dict[str, np.ndarray] = {}
    labels = None
    missing = []
    for name in names:
      if (mem_key, name) in self._memory:
        entry = self._memory[(mem_key, name)]
      elif use_cache and self.cache.directory is not None:
        entry = self.cache.load(self.fingerprint, data_key, name)
        if entry is not None:
          self.cache.hits.append(name)
          self._memory[(mem_key, name)] = entry
      else:
        entry = None
      if entry is None:
        missing.append(name)
      else:
        found[name], labels = entry["features"], entry["label"]
    if jax.process_count() > 1:
      # Extraction is collective: if any process lacks a file (a workdir that is not
      # shared, a write not yet visible), every process extracts.
      missing = list(names) if multihost_utils.process_allgather(
          np.asarray(bool(missing))).any() else []
    if missing:
      # All names again, not only the missing ones: every array of one extraction comes
      # from the same pass (cached files of another run could differ in float noise).
      logging.info("Extracting %s on %s %s.", list(names), data_config["dataset"], split)
      out = extract(self.model, self.params, data_config, split, names,
                    batch_size=batch_size, mesh=self.mesh)
      self.cache.computed += list(names)
      for name in names:
        entry = {"features": out[name], "label": out["label"]}
        self._memory[(mem_key, name)] = entry
        if use_cache:
          self.cache.save(self.fingerprint, data_key, name, out[name], out["label"])
        found[name] = out[name]
      labels = out["label"]
    return {**found, "label": labels}
