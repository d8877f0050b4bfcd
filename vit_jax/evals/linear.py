"""Linear probes on frozen features, as DINOv2 evaluates: a grid trained at once.

Every (feature choice f, learning rate l) is a linear classifier W[f][l] [D_f, C] with a
bias, trained with SGD + momentum and a cosine learning-rate schedule on the mean
cross-entropy plus weight_decay / 2 * |W|^2 (the bias is not decayed), from zeros. All
F x L classifiers see the same mini-batches and are updated by one jitted step (a
`lax.scan` over an epoch); their losses are independent, so the gradient of their sum
is each one's own gradient. The grid point with the best top-1 on a part of train held
out (`val_fraction`, seeded) is reported on the test features.

`train_grid_stream` trains the same grid on batches computed elsewhere: the full-data
path, where a frozen backbone turns each augmented training batch into features on the
fly (nothing cached), for datasets too big to cache.

With weight_decay = wd the objective is scikit-learn's LogisticRegression (multinomial)
with C = 1 / (N * wd): tests/evals compares the two.

Shapes: features [N, D_f] per choice, labels [N]; heads w [L, D_f, C], b [L, C].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _logits(head: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """[B, D] features, head w [L, D, C] -> logits [L, B, C]."""
  return jnp.einsum("bd,ldc->lbc", x, head["w"]) + head["b"][:, None]


def _loss(heads, xs, labels, mask, weight_decay):
  total = 0.0
  for head, x in zip(heads, xs):
    logp = jax.nn.log_softmax(_logits(head, x), axis=-1)  # [L, B, C]
    ce = -jnp.take_along_axis(logp, labels[None, :, None], axis=-1)[..., 0]  # [L, B]
    per_head = jnp.sum(ce * mask, axis=1) / jnp.maximum(jnp.sum(mask), 1.0)
    per_head += 0.5 * weight_decay * jnp.sum(jnp.square(head["w"]), axis=(1, 2))
    total += jnp.sum(per_head)
  return total


def _update(heads, buf, xs, labels, mask, step, *, lrs, total_steps, momentum, weight_decay):
  """One SGD-momentum step of every classifier on a batch; returns heads, buffers."""
  grads = jax.grad(_loss)(heads, xs, labels, mask, weight_decay)
  scale = 0.5 * (1.0 + jnp.cos(jnp.pi * step / total_steps))  # cosine to 0
  buf = jax.tree.map(lambda m, g: momentum * m + g, buf, grads)

  def apply(p, m):
    lr = (lrs * scale).reshape((-1,) + (1,) * (p.ndim - 1))  # [L] -> [L, 1, ...]
    return p - lr * m
  return jax.tree.map(apply, heads, buf), buf


@functools.partial(jax.jit, static_argnames=("batch_size",), donate_argnums=(0, 1))
def _epoch(heads, momentum_buf, features, labels, order, step0, *, batch_size, lrs,
           total_steps, momentum, weight_decay):
  """One pass over `order` (indices, -1 = padding) in batches; returns heads, buffers."""
  batches = order.reshape(-1, batch_size)

  def body(carry, idx):
    heads, buf, step = carry
    mask = (idx >= 0).astype(jnp.float32)
    idx = jnp.maximum(idx, 0)
    heads, buf = _update(heads, buf, tuple(f[idx] for f in features), labels[idx], mask, step,
                         lrs=lrs, total_steps=total_steps, momentum=momentum,
                         weight_decay=weight_decay)
    return (heads, buf, step + 1), None

  (heads, momentum_buf, _), _ = jax.lax.scan(body, (heads, momentum_buf, step0), batches)
  return heads, momentum_buf


def _init_heads(dims: Sequence[int], num_lrs: int, num_classes: int):
  heads = [{"w": jnp.zeros((num_lrs, d, num_classes), jnp.float32),
            "b": jnp.zeros((num_lrs, num_classes), jnp.float32)} for d in dims]
  return heads, jax.tree.map(jnp.zeros_like, heads)


def train_grid(features: Sequence[np.ndarray], labels: np.ndarray, *, num_classes: int,
               learning_rates: Sequence[float], epochs: int, batch_size: int,
               momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0
               ) -> list[dict[str, jax.Array]]:
  """Heads [{w [L, D_f, C], b [L, C]}] per feature choice, trained together."""
  n = len(labels)
  batch_size = min(batch_size, n)
  steps_per_epoch = math.ceil(n / batch_size)
  lrs = jnp.asarray(learning_rates, jnp.float32)
  heads, buf = _init_heads([f.shape[1] for f in features], len(lrs), num_classes)
  feats = tuple(jnp.asarray(f, jnp.float32) for f in features)
  labels_dev = jnp.asarray(labels, jnp.int32)
  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    order = np.full(steps_per_epoch * batch_size, -1, np.int32)
    order[:n] = rng.permutation(n)
    heads, buf = _epoch(heads, buf, feats, labels_dev, jnp.asarray(order),
                        jnp.asarray(epoch * steps_per_epoch, jnp.float32),
                        batch_size=batch_size, lrs=lrs,
                        total_steps=float(epochs * steps_per_epoch), momentum=momentum,
                        weight_decay=weight_decay)
  return heads


def train_grid_stream(batches: Iterator[tuple[tuple[jax.Array, ...], jax.Array]],
                      dims: Sequence[int], *, steps: int, num_classes: int,
                      learning_rates: Sequence[float], momentum: float = 0.9,
                      weight_decay: float = 0.0) -> list[dict[str, jax.Array]]:
  """The same grid trained on `steps` batches (features per choice [B, D_f], labels [B])
  computed elsewhere, e.g. by a frozen backbone on augmented training batches."""
  lrs = jnp.asarray(learning_rates, jnp.float32)
  heads, buf = _init_heads(dims, len(lrs), num_classes)
  step_fn = jax.jit(functools.partial(_update, lrs=lrs, total_steps=float(steps),
                                      momentum=momentum, weight_decay=weight_decay),
                    donate_argnums=(0, 1))
  for step, (xs, labels) in zip(range(steps), batches):
    heads, buf = step_fn(heads, buf, tuple(xs), labels, jnp.ones(labels.shape, jnp.float32),
                         jnp.asarray(step, jnp.float32))
  return heads


@jax.jit
def _predict(head, x):
  return _logits(head, x)


def logits(head: dict[str, jax.Array], x: np.ndarray, chunk: int = 8192) -> np.ndarray:
  """[L, M, C] logits of every learning rate's classifier."""
  return np.concatenate([np.asarray(_predict(head, jnp.asarray(x[i:i + chunk], jnp.float32)))
                         for i in range(0, len(x), chunk)], axis=1)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, held-out indices), a seeded random split; at least one of each."""
  order = np.random.default_rng(seed).permutation(n)
  n_val = min(max(1, int(round(n * val_fraction))), n - 1)
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def evaluate(train: Mapping[str, np.ndarray], train_labels: np.ndarray,
             test: Mapping[str, np.ndarray], test_labels: np.ndarray, *, num_classes: int,
             learning_rates: Sequence[float], epochs: int, batch_size: int,
             momentum: float = 0.9, weight_decay: float = 0.0, val_fraction: float = 0.1,
             seed: int = 0) -> dict[str, Any]:
  """The sweep: top1/top5 on test of the grid point best on the held-out part of train.

  Returns {"top1", "top5", "val_top1", "best_lr", "best_features", "grid": {feature:
  {lr: held-out top1}}}.
  """
  names = list(train)
  fit_idx, val_idx = split_train_val(len(train_labels), val_fraction, seed)
  heads = train_grid([train[k][fit_idx] for k in names], train_labels[fit_idx],
                     num_classes=num_classes, learning_rates=learning_rates, epochs=epochs,
                     batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                     seed=seed)
  return select_and_test(heads, names, {k: train[k][val_idx] for k in names},
                         train_labels[val_idx], test, test_labels,
                         learning_rates=learning_rates, num_classes=num_classes)


def select_and_test(heads: Sequence[dict[str, jax.Array]], names: Sequence[str],
                    val: Mapping[str, np.ndarray], val_labels: np.ndarray,
                    test: Mapping[str, np.ndarray], test_labels: np.ndarray, *,
                    learning_rates: Sequence[float], num_classes: int) -> dict[str, Any]:
  """The grid point best on `val` (the first of equals), reported on `test` (see evaluate)."""
  val_acc = np.stack([(logits(h, val[k]).argmax(-1) == val_labels[None]).mean(axis=1)
                      for h, k in zip(heads, names)])  # [F, L]
  f, lr_i = np.unravel_index(int(np.argmax(val_acc)), val_acc.shape)
  test_logits = logits(heads[f], test[names[f]])[lr_i]  # [M, C]
  top5 = np.argsort(-test_logits, axis=1, kind="stable")[:, :min(5, num_classes)]
  return {
      "top1": float(np.mean(top5[:, 0] == test_labels)),
      "top5": float(np.mean(np.any(top5 == test_labels[:, None], axis=1))),
      "val_top1": float(val_acc[f, lr_i]),
      "best_lr": float(learning_rates[lr_i]),
      "best_features": names[f],
      "grid": {k: {str(lr): float(a) for lr, a in zip(learning_rates, row)}
               for k, row in zip(names, val_acc)},
  }
