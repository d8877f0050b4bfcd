"""kNN classification on frozen features, as DINO evaluates (Caron et al. 2021, eval_knn.py).

Features are L2-normalised; a query's neighbours are the k training examples of highest
cosine similarity; each votes for its label with weight exp(similarity / T) (T = 0.07),
or 1 with weighting="uniform" (a majority vote; ties go to the lowest label, as
scikit-learn's KNeighborsClassifier). Top-1 is the class with most votes, top-5 the
five. All ks come from one top-k of the largest k, in chunks of queries on the device.

Shapes: train [N, D], labels [N]; queries [Q, D] -> votes [Q, C] per k.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes", "weighting"))
def _votes(train: jax.Array, train_labels: jax.Array, queries: jax.Array, *,
           ks: tuple[int, ...], num_classes: int, temperature: float,
           weighting: str) -> tuple[jax.Array, ...]:
  """Votes [Q, C] for each k in `ks` (train already normalised)."""
  sims = _normalise(queries) @ train.T  # [Q, N]
  top_sims, top_idx = jax.lax.top_k(sims, max(ks))  # [Q, kmax], most similar first
  neighbours = jax.nn.one_hot(train_labels[top_idx], num_classes)  # [Q, kmax, C]
  weights = (jnp.exp(top_sims / temperature) if weighting == "temperature"
             else jnp.ones_like(top_sims))
  return tuple(jnp.einsum("qk,qkc->qc", weights[:, :k], neighbours[:, :k]) for k in ks)


def votes(train: np.ndarray, train_labels: np.ndarray, queries: np.ndarray, *,
          ks: Sequence[int], num_classes: int, temperature: float = 0.07,
          weighting: str = "temperature", query_chunk: int = 1024) -> dict[int, np.ndarray]:
  """{k: votes [Q, C]} for every query; k larger than N is clipped to N."""
  n = len(train)
  ks = tuple(sorted({min(int(k), n) for k in ks}))
  train_dev = _normalise(jnp.asarray(train, jnp.float32))
  labels_dev = jnp.asarray(train_labels, jnp.int32)
  chunk = min(query_chunk, len(queries))
  out = {k: [] for k in ks}
  for start in range(0, len(queries), chunk):
    q = np.asarray(queries[start:start + chunk], np.float32)
    real = len(q)
    if real < chunk:  # one compiled shape: the last chunk padded
      q = np.concatenate([q, np.ones((chunk - real, q.shape[1]), np.float32)])
    result = _votes(train_dev, labels_dev, jnp.asarray(q), ks=ks, num_classes=num_classes,
                    temperature=float(temperature), weighting=weighting)
    for k, v in zip(ks, result):
      out[k].append(np.asarray(v)[:real])
  return {k: np.concatenate(v) for k, v in out.items()}


def evaluate(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
             test_labels: np.ndarray, *, ks: Sequence[int], num_classes: int,
             temperature: float = 0.07, weighting: str = "temperature",
             query_chunk: int = 1024) -> dict[str, float]:
  """{"top1_k{k}", "top5_k{k}"} in [0, 1] for every k (k clipped to the train size)."""
  result = votes(train, train_labels, test, ks=ks, num_classes=num_classes,
                 temperature=temperature, weighting=weighting, query_chunk=query_chunk)
  metrics = {}
  for k, v in result.items():
    # Stable order: among equal votes the lowest label ranks first.
    order = np.argsort(-v, axis=1, kind="stable")[:, :min(5, num_classes)]
    metrics[f"top1_k{k}"] = float(np.mean(order[:, 0] == test_labels))
    metrics[f"top5_k{k}"] = float(np.mean(np.any(order == test_labels[:, None], axis=1)))
  return metrics
