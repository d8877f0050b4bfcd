"""Attentive probe on frozen token features, as V-JEPA / V-JEPA 2 evaluate.

`AttentiveProbe`: `depth` pre-norm self-attention blocks over the frozen tokens (V-JEPA
2's probe has them; V-JEPA's has none), then `num_queries` learned query tokens
cross-attend to the (normed) tokens, an MLP refines them (pre-norm, residual), their mean
goes through a LayerNorm, optional dropout (`dropout_rate`, training only) and a linear
classifier. Trained with AdamW, linear warmup and a cosine schedule on the cross-entropy,
optionally with smoothed labels (`label_smoothing`). Clips with several eval views
[N, V, L, D]: the views' logits are averaged (in training and testing), as the video
evaluators average.

Two ways to feed it (registry.MODES):
  `train` / `evaluate`: cached tokens [N, (V,) L, D] held whole on the device, epochs
    over them (small data: at SSv2 or K400 scale that is terabytes).
  `train_stream` / `evaluate_stream`: batches of inputs go through the frozen backbone
    (`tokens_of`) and straight into the probe's step, in one jitted function sharded over
    the mesh (the batch split over its devices, the probe replicated); testing streams
    the eval split once and counts hits exactly (padding masked). Memory is bounded by
    the batch.

Shapes: tokens [B, L, D] or [B, V, L, D] -> logits [B, C].
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vit_jax.driver import parallel
from vit_jax.errors import ConfigError


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
  dropout_rate: float = 0.0  # on the pooled feature, before the classifier

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
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
    pooled = nn.Dropout(self.dropout_rate)(pooled, deterministic=not train)
    return nn.Dense(self.num_classes, name="head")(pooled)


def _apply_views(probe: AttentiveProbe, params: Any, tokens: jax.Array,
                 dropout_rng: jax.Array | None = None) -> jax.Array:
  """tokens [B, L, D] or [B, V, L, D] -> logits [B, C] (views' logits averaged).

  dropout_rng: training with dropout (None: no dropout, as in testing).
  """
  kw = {} if dropout_rng is None else {"train": True, "rngs": {"dropout": dropout_rng}}
  if tokens.ndim == 4:
    b, v = tokens.shape[:2]
    out = probe.apply({"params": params}, tokens.reshape((b * v,) + tokens.shape[2:]), **kw)
    return out.reshape(b, v, -1).mean(axis=1)
  return probe.apply({"params": params}, tokens, **kw)


def _losses(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
  """Cross-entropy per example [B] of logits [B, C], labels [B] (smoothed when > 0)."""
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _dropout_rng(probe: AttentiveProbe, seed: int, step: jax.Array) -> jax.Array | None:
  """The dropout key of training step `step`, or None when the probe has no dropout."""
  if not probe.dropout_rate:
    return None
  return jax.random.fold_in(jax.random.key(seed + 1), step)


def _probe(num_classes: int, width: int, num_queries: int, num_heads: int, depth: int,
           mlp_ratio: float, dropout_rate: float) -> AttentiveProbe:
  if width % num_heads:
    raise ConfigError(f"The token width {width} is not divisible by num_heads={num_heads}; "
                      "pick a divisor of it.")
  return AttentiveProbe(num_classes=num_classes, num_queries=num_queries, num_heads=num_heads,
                        depth=depth, mlp_ratio=mlp_ratio, dropout_rate=dropout_rate)


def _optimizer(learning_rate: float, weight_decay: float, warmup: int,
               total: int) -> optax.GradientTransformation:
  """AdamW, linear warmup from 0 over `warmup` steps, then cosine to 0 at `total`."""
  return optax.adamw(optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total),
                     weight_decay=weight_decay)


def train(tokens: np.ndarray, labels: np.ndarray, *, num_classes: int, num_queries: int = 1,
          num_heads: int = 4, depth: int = 0, mlp_ratio: float = 4.0, epochs: int = 20,
          batch_size: int = 64, learning_rate: float = 1e-3, weight_decay: float = 0.01,
          warmup_epochs: int = 1, seed: int = 0, dropout_rate: float = 0.0,
          label_smoothing: float = 0.0) -> tuple[AttentiveProbe, Any]:
  """(probe, params) trained on tokens [N, (V,) L, D] with labels [N]."""
  n = len(labels)
  batch_size = min(batch_size, n)
  steps_per_epoch = math.ceil(n / batch_size)
  total = epochs * steps_per_epoch
  probe = _probe(num_classes, tokens.shape[-1], num_queries, num_heads, depth, mlp_ratio,
                 dropout_rate)
  rng = jax.random.key(seed)
  params = probe.init(rng, jnp.zeros((1,) + tokens.shape[-2:], jnp.float32))["params"]
  tx = _optimizer(learning_rate, weight_decay,
                  min(warmup_epochs * steps_per_epoch, total - 1) if total > 1 else 0, total)
  opt_state = tx.init(params)
  data = jnp.asarray(tokens, jnp.float32)
  labels_dev = jnp.asarray(labels, jnp.int32)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def epoch_fn(params, opt_state, order, step0):
    def body(carry, xs):
      params, opt_state = carry
      idx, step = xs
      mask = (idx >= 0).astype(jnp.float32)
      idx = jnp.maximum(idx, 0)

      def loss_fn(p):
        logits = _apply_views(probe, p, data[idx], _dropout_rng(probe, seed, step))
        ce = _losses(logits, labels_dev[idx], label_smoothing)
        return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(
        body, (params, opt_state),
        (order.reshape(-1, batch_size), step0 + jnp.arange(steps_per_epoch)))
    return params, opt_state

  np_rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    order = np.full(steps_per_epoch * batch_size, -1, np.int32)
    order[:n] = np_rng.permutation(n)
    params, opt_state = epoch_fn(params, opt_state, jnp.asarray(order),
                                 jnp.asarray(epoch * steps_per_epoch, jnp.int32))
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


TokensOf = Callable[[Any, jax.Array], jax.Array]


def train_stream(batches: Iterator[tuple[jax.Array, jax.Array]], tokens_of: TokensOf,
                 frozen: Any, *, mesh: jax.sharding.Mesh, num_classes: int, steps: int,
                 num_queries: int = 1, num_heads: int = 4, depth: int = 0,
                 mlp_ratio: float = 4.0, learning_rate: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 0, seed: int = 0,
                 dropout_rate: float = 0.0, label_smoothing: float = 0.0
                 ) -> tuple[AttentiveProbe, Any]:
  """(probe, params) trained on `steps` batches computed on the fly.

  batches: (inputs, labels [B]) global arrays, the batch split over `mesh`'s devices
    (e.g. data.train_iterator's images and labels).
  tokens_of: (frozen, inputs) -> tokens [B, (V,) L, D], the frozen backbone; no gradient
    flows into it.
  The probe's parameters and AdamW state are replicated on every device; each step is
  one jitted call (backbone forward, probe forward and backward, update).
  """
  replicated = parallel.replicated(mesh)
  first = next(batches, None)
  if first is None:
    raise ConfigError("The attentive probe's training stream is empty: check "
                      "data.train_split.")
  shape = jax.eval_shape(tokens_of, frozen, first[0]).shape  # [B, (V,) L, D]
  probe = _probe(num_classes, shape[-1], num_queries, num_heads, depth, mlp_ratio,
                 dropout_rate)
  params = probe.init(jax.random.key(seed), jnp.zeros((1,) + shape[-2:], jnp.float32))["params"]
  tx = _optimizer(learning_rate, weight_decay, warmup_steps, steps)
  params = jax.device_put(params, replicated)
  opt_state = jax.device_put(tx.init(params), replicated)

  @functools.partial(jax.jit, donate_argnums=(0, 1),
                     out_shardings=(replicated, replicated, replicated))
  def step_fn(params, opt_state, frozen, inputs, labels, step):
    tokens = jax.lax.stop_gradient(tokens_of(frozen, inputs)).astype(jnp.float32)

    def loss_fn(p):
      logits = _apply_views(probe, p, tokens, _dropout_rng(probe, seed, step))
      return _losses(logits, labels, label_smoothing).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  log_every = max(steps // 10, 1)
  stream = itertools.chain([first], batches)
  done = 0
  for inputs, labels in stream:
    params, opt_state, loss = step_fn(params, opt_state, frozen, inputs, labels,
                                      jnp.asarray(done, jnp.int32))
    done += 1
    if done % log_every == 0 or done == steps:
      logging.info("Attentive probe step %d/%d: loss %.4f.", done, steps, float(loss))
    if done == steps:
      break
  if done < steps:
    raise ConfigError(f"The attentive probe's training stream ended after {done} of "
                      f"{steps} steps: check data.train_split.")
  return probe, params


def evaluate_stream(probe: AttentiveProbe, params: Any,
                    batches: Iterator[tuple[jax.Array, jax.Array, jax.Array]],
                    tokens_of: TokensOf, frozen: Any, *, mesh: jax.sharding.Mesh,
                    num_classes: int) -> dict[str, float]:
  """{"top1", "top5", "num_examples"} over batches (inputs, labels [B], mask [B]), each
  real example (mask True) counted once; several views' logits are averaged.

  Hits are counted on the device as exact integers (the first of equal logits wins, as
  `evaluate`'s stable sort does), so the figures are those of the cached path.
  """
  k = min(5, num_classes)

  @functools.partial(jax.jit, out_shardings=parallel.replicated(mesh))
  def counts(params, frozen, inputs, labels, mask):
    logits = _apply_views(probe, params, tokens_of(frozen, inputs).astype(jnp.float32))
    top = jax.lax.top_k(logits, k)[1]  # [B, k], lower index first among equals
    m = mask.astype(jnp.int32)
    return jnp.stack([jnp.sum((top[:, 0] == labels) * m),
                      jnp.sum(jnp.any(top == labels[:, None], axis=1) * m), jnp.sum(m)])

  total = None
  for inputs, labels, mask in batches:
    c = counts(params, frozen, inputs, labels, mask)
    total = c if total is None else total + c
  top1, top5, n = (0, 0, 0) if total is None else (int(x) for x in jax.device_get(total))
  if not n:
    raise ConfigError("The attentive probe's evaluation split is empty: check "
                      "data.eval_split.")
  return {"top1": top1 / n, "top5": top5 / n, "num_examples": n}
