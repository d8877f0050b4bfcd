"""Optimizer and learning-rate schedule from the config.

SGD with momentum is the fine-tuning default of the released ViT recipes, AdamW
the pre-training one. Weight decay touches only kernels (not biases, norms,
position embeddings, cls or the MAP probe), as in the reference codebases.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax.errors import ConfigError

_BLOCK = re.compile(r"encoderblock_(\d+)$")


def param_paths(params: Any) -> Any:
  """A tree like `params` whose leaves are the "/"-joined paths."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({k: "/".join(k) for k in flat})


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0, then cosine / linear / rsqrt decay or constant."""
  lr, total = config.lr, config.total_steps
  warmup = lr.warmup_steps
  decay_steps = max(total - warmup, 1)
  if lr.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr.base, decay_steps, alpha=lr.end_value / lr.base
                                       if lr.base else 0.0)
  elif lr.schedule == "linear":
    main = optax.linear_schedule(lr.base, lr.end_value, decay_steps)
  elif lr.schedule == "rsqrt":
    timescale = max(warmup, 1)
    main = lambda step: lr.base * jax.lax.rsqrt((step + timescale) / timescale)
  else:
    main = optax.constant_schedule(lr.base)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr.base, warmup), main], [warmup])


def weight_decay_mask(params: Any) -> Any:
  return jax.tree.map(lambda p: p.endswith("/kernel"), param_paths(params))


def _layer_index(path: str, depth: int) -> int:
  """0 for what comes before the blocks, i+1 for encoder block i, depth+1 after them.

  Before the blocks (BEiT / timm layer decay): the patch embedding, position embedding,
  cls, distillation and register tokens, and CLIP's pre-norm.
  """
  parts = path.split("/")
  for part in parts:
    if m := _BLOCK.match(part):
      return int(m.group(1)) + 1
  if (parts[0] in ("embedding", "cls", "dist", "registers") or "posembed_input" in parts
      or "pre_norm" in parts):
    return 0
  return depth + 1


def layer_decay_scales(params: Any, decay: float) -> Any:
  """Per-leaf multipliers decay^(depth + 1 - layer); stacked blocks get a [L, 1, ...] array."""
  paths = param_paths(params)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  depth = 0
  for key in flat:
    for part in key:
      if m := _BLOCK.match(part):
        depth = max(depth, int(m.group(1)) + 1)
      if part == "encoderblock":
        depth = max(depth, flat[key].shape[0])

  def scale(path, leaf):
    if "/encoderblock/" in f"/{path}/":
      layers = np.arange(leaf.shape[0]) + 1
      return (decay ** (depth + 1 - layers)).reshape((-1,) + (1,) * (leaf.ndim - 1))
    return np.asarray(decay ** (depth + 1 - _layer_index(path, depth)))

  return jax.tree.map(scale, paths, params)


def _scale_by_tree(scales: Any) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def frozen_mask(params: Any, patterns: tuple[str, ...]) -> Any:
  regexes = [re.compile(p) for p in patterns]
  return jax.tree.map(lambda path: any(r.search(path) for r in regexes), param_paths(params))


def create_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
  """The full update rule: clip -> optimizer -> weight decay -> lr (-> layer decay) -> freeze.

  `params` may be abstract (ShapeDtypeStructs); only paths and shapes are read.
  """
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  mu_dtype = jnp.bfloat16 if opt.mu_dtype == "bfloat16" else None
  chain = []
  if config.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if opt.name == "sgd":
    if opt.momentum:
      chain.append(optax.trace(decay=opt.momentum, nesterov=opt.nesterov,
                               accumulator_dtype=mu_dtype))
  else:
    chain.append(optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps, mu_dtype=mu_dtype))
  if opt.weight_decay:
    chain.append(optax.add_decayed_weights(opt.weight_decay, mask=weight_decay_mask(params)))
  chain.append(optax.scale_by_learning_rate(schedule))
  if config.lr.layer_decay < 1.0:
    chain.append(_scale_by_tree(layer_decay_scales(params, config.lr.layer_decay)))
  tx = optax.chain(*chain)
  if config.freeze:
    mask = frozen_mask(params, tuple(config.freeze))
    if not any(jax.tree.leaves(mask)):
      raise ConfigError(f"freeze patterns {list(config.freeze)} match no parameter; "
                       "patterns are regexes over paths like 'Transformer/encoderblock_0/...'.")
    labels = jax.tree.map(lambda f: "frozen" if f else "trained", mask)
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx
