"""Few-shot linear regression on frozen features, as big_vision's `fewshot_lsr` evaluator.

For each seed, each class's training examples are permuted with that seed
(numpy default_rng(seed)) and the first `shots` taken. The features of those shots are
standardised (their mean and std + 1e-5), a constant feature of 100 is appended (the
bias, almost unregularised), and targets are one-hot rescaled to {-1, 1}. The weights
are the closed-form L2-regularised least squares solution
  W = (X^T X + l2 I)^-1 X^T Y      (X^T (X X^T + l2 I)^-1 Y when features outnumber shots),
solved in float64 on the host; a test example's class is argmax(x W).

Shapes: train [N, D], test [M, D]; W [D + 1, C].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BIAS_CONSTANT = 100.0


def sample_shots(labels: np.ndarray, shots: int, seed: int, num_classes: int) -> np.ndarray:
  """Indices of `shots` examples per class (fewer where a class has fewer), seeded."""
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
  return np.concatenate([idx[:shots] for idx in per_class])


def design(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """Standardised features with the bias column: [N, D] -> [N, D + 1] (float64)."""
  z = (np.asarray(x, np.float64) - mean) / std
  return np.pad(z, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2_reg: float
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(W [D + 1, C], mean [1, D], std [1, D]) of the regression on shots x [N, D], y [N]."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0, keepdims=True)
  std = x.std(axis=0, keepdims=True) + 1e-5
  a = design(x, mean, std)
  targets = 2.0 * np.eye(num_classes)[y] - 1.0
  n, d = a.shape
  if n >= d:
    w = np.linalg.solve(a.T @ a + l2_reg * np.eye(d), a.T @ targets)
  else:
    w = a.T @ np.linalg.solve(a @ a.T + l2_reg * np.eye(n), targets)
  return w, mean, std


def predict(w: np.ndarray, mean: np.ndarray, std: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Class indices [M] for features x [M, D]."""
  return np.argmax(design(x, mean, std) @ w, axis=1)


def evaluate(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
             test_labels: np.ndarray, *, shots: Sequence[int], seeds: int, num_classes: int,
             l2_reg: float = 2.0 ** 10) -> dict[str, float]:
  """{"{s}shot_top1": mean over seeds, "{s}shot_top1_std": their spread} per shot count."""
  metrics = {}
  for s in shots:
    accs = []
    for seed in range(seeds):
      idx = sample_shots(train_labels, int(s), seed, num_classes)
      w, mean, std = fit(train[idx], train_labels[idx], num_classes, l2_reg)
      accs.append(float(np.mean(predict(w, mean, std, test) == test_labels)))
    metrics[f"{s}shot_top1"] = float(np.mean(accs))
    metrics[f"{s}shot_top1_std"] = float(np.std(accs))
  return metrics
