"""Attentive probe on frozen token features, as V-JEPA / V-JEPA 2 evaluate.

`AttentiveProbe`: `depth` pre-norm self-attention blocks over the frozen tokens (V-JEPA
2's probe has them; V-JEPA's has none), then `num_queries` learned query tokens
cross-attend to the (normed) tokens, an MLP refines them (pre-norm, residual), their mean
goes through a LayerNorm and a linear classifier. Trained with AdamW, linear warmup and
a cosine schedule on cached tokens. Clips with several eval views [N, V, L, D]: the
views' logits are averaged (in training and testing), as the video evaluators average.

Shapes: tokens [B, L, D] or [B, V, L, D] -> logits [B, C].
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class _SelfBlock(nn.Module):
  num_heads: int
  mlp_ratio: float

  @nn.compact
  def __call__(self, x):  # [B, L, D] -> [B, L, D]
    d = x.shape[-1]
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(d)(nn.gelu(nn.Dense(int(d * self.mlp_ratio))(y)))
    return x + y


class AttentiveProbe(nn.Module):
  """Frozen tokens [B, L, D] -> logits [B, num_classes] (see the module docstring)."""
  num_classes: int
  num_queries: int = 1
  num_heads: int = 4
  depth: int = 0
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    batch, _, d = tokens.shape
    x = tokens
    for i in range(self.depth):
      x = _SelfBlock(self.num_heads, self.mlp_ratio, name=f"block_{i}")(x)
    query = self.param("query", nn.initializers.normal(0.02), (1, self.num_queries, d))
    q = jnp.tile(query, (batch, 1, 1))  # [B, Q, D]
    kv = nn.LayerNorm(name="norm_kv")(x)
    q = q + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="cross_attention")(
        q, kv)
    y = nn.LayerNorm(name="norm_mlp")(q)
    q = q + nn.Dense(d, name="mlp_out")(nn.gelu(nn.Dense(int(d * self.mlp_ratio),
                                                         name="mlp_in")(y)))
    pooled = nn.LayerNorm(name="norm_out")(q.mean(axis=1))  # [B, Q, D] -> [B, D]
    return nn.Dense(self.num_classes, name="head")(pooled)


def _apply_views(probe: AttentiveProbe, params: Any, tokens: jax.Array) -> jax.Array:
  """tokens [B, L, D] or [B, V, L, D] -> logits [B, C] (views' logits averaged)."""
  if tokens.ndim == 4:
    b, v = tokens.shape[:2]
    out = probe.apply({"params": params}, tokens.reshape((b * v,) + tokens.shape[2:]))
    return out.reshape(b, v, -1).mean(axis=1)
  return probe.apply({"params": params}, tokens)


def train(tokens: np.ndarray, labels: np.ndarray, *, num_classes: int, num_queries: int = 1,
          num_heads: int = 4, depth: int = 0, mlp_ratio: float = 4.0, epochs: int = 20,
          batch_size: int = 64, learning_rate: float = 1e-3, weight_decay: float = 0.01,
          warmup_epochs: int = 1, seed: int = 0) -> tuple[AttentiveProbe, Any]:
  """(probe, params) trained on tokens [N, (V,) L, D] with labels [N]."""
  n = len(labels)
  batch_size = min(batch_size, n)
  steps_per_epoch = math.ceil(n / batch_size)
  total = epochs * steps_per_epoch
  d = tokens.shape[-1]
  if d % num_heads:
    raise ValueError(f"The token width {d} is not divisible by num_heads={num_heads}; pick "
                     "a divisor of it.")
  probe = AttentiveProbe(num_classes=num_classes, num_queries=num_queries,
                         num_heads=num_heads, depth=depth, mlp_ratio=mlp_ratio)
  rng = jax.random.key(seed)
  params = probe.init(rng, jnp.zeros((1,) + tokens.shape[-2:], jnp.float32))["params"]
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, min(warmup_epochs * steps_per_epoch, total - 1) if total > 1 else 0,
      total)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  opt_state = tx.init(params)
  data = jnp.asarray(tokens, jnp.float32)
  labels_dev = jnp.asarray(labels, jnp.int32)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def epoch_fn(params, opt_state, order):
    def body(carry, idx):
      params, opt_state = carry
      mask = (idx >= 0).astype(jnp.float32)
      idx = jnp.maximum(idx, 0)

      def loss_fn(p):
        logits = _apply_views(probe, p, data[idx])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels_dev[idx])
        return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(body, (params, opt_state),
                                          order.reshape(-1, batch_size))
    return params, opt_state

  np_rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = np.full(steps_per_epoch * batch_size, -1, np.int32)
    order[:n] = np_rng.permutation(n)
    params, opt_state = epoch_fn(params, opt_state, jnp.asarray(order))
  return probe, params


def predict_logits(probe: AttentiveProbe, params: Any, tokens: np.ndarray,
                   chunk: int = 256) -> np.ndarray:
  """Logits [M, C] of tokens [M, (V,) L, D]."""
  fn = jax.jit(lambda p, x: _apply_views(probe, p, x))
  return np.concatenate([np.asarray(fn(params, jnp.asarray(tokens[i:i + chunk], jnp.float32)))
                         for i in range(0, len(tokens), chunk)])


def evaluate(train_tokens: np.ndarray, train_labels: np.ndarray, test_tokens: np.ndarray,
             test_labels: np.ndarray, *, num_classes: int, **options: Any) -> dict[str, float]:
  """{"top1", "top5"} on test of a probe trained on train."""
  probe, params = train(train_tokens, train_labels, num_classes=num_classes, **options)
  out = predict_logits(probe, params, test_tokens)
  top5 = np.argsort(-out, axis=1, kind="stable")[:, :min(5, num_classes)]
  return {"top1": float(np.mean(top5[:, 0] == test_labels)),
          "top5": float(np.mean(np.any(top5 == test_labels[:, None], axis=1)))}
