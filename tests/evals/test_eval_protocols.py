"""The frozen-feature protocols against direct numpy and scikit-learn implementations.

Features are built here (Gaussian classes); nothing is read from disk.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier

from vit_jax.errors import ConfigError
from vit_jax.evals import attentive, fewshot, knn, linear, registry


def _blobs(n_train, n_test, num_classes, dim, spread, seed):
  """(train, train labels, test, test labels): Gaussian classes around shared centres."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim))
  out = []
  for n in (n_train, n_test):
    labels = np.repeat(np.arange(num_classes), n)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    out += [x[order].astype(np.float32), labels[order]]
  return out


def _numpy_knn_votes(train, train_labels, queries, k, num_classes, temperature):
  """DINO's weighted vote, written out directly."""
  a = train / np.linalg.norm(train, axis=1, keepdims=True)
  q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  sims = q @ a.T
  votes = np.zeros((len(q), num_classes))
  for i in range(len(q)):
    nearest = np.argsort(-sims[i], kind="stable")[:k]
    for j in nearest:
      votes[i, train_labels[j]] += np.exp(sims[i, j] / temperature)
  return votes


def test_knn_weighted_vote_matches_numpy_and_uniform_matches_sklearn():
  train, train_y, test, test_y = _blobs(40, 15, 7, 16, 0.3, seed=0)
  ks = (1, 10, 20, 100)
  # query_chunk 32 does not divide the 105 queries: the padded last chunk is exercised.
  ours = knn.votes(train, train_y, test, ks=ks, num_classes=7, temperature=0.07,
                   query_chunk=32)
  for k in ks:
    ref = _numpy_knn_votes(train, train_y, test, k, 7, 0.07)
    np.testing.assert_allclose(ours[k], ref, rtol=2e-4, atol=1e-5 * ref.max())
    np.testing.assert_array_equal(ours[k].argmax(1), ref.argmax(1))
  uniform = knn.votes(train, train_y, test, ks=ks, num_classes=7, weighting="uniform",
                      query_chunk=32)
  for k in ks:
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train,
                                                                                       train_y)
    ours_pred = np.argsort(-uniform[k], axis=1, kind="stable")[:, 0]
    np.testing.assert_array_equal(ours_pred, clf.predict(test))
  metrics = knn.evaluate(train, train_y, test, test_y, ks=(10, 20, 100, 200), num_classes=7)
  assert set(metrics) == {f"top{t}_k{k}" for t in (1, 5) for k in (10, 20, 100, 200)}
  assert all(metrics[f"top5_k{k}"] >= metrics[f"top1_k{k}"] for k in (10, 20, 100, 200))
  assert metrics["top1_k20"] > 0.8  # well-separated classes


def test_fewshot_matches_sklearn_ridge_and_samples_per_class_with_a_seed():
  train, train_y, test, test_y = _blobs(30, 20, 5, 12, 0.5, seed=2)
  for shots in (1, 5, 25):  # 5 shots x 5 classes < 13 features: the dual form; 25: primal
    idx = fewshot.sample_shots(train_y, shots, seed=4, num_classes=5)
    assert np.array_equal(np.bincount(train_y[idx], minlength=5), [shots] * 5)
    np.testing.assert_array_equal(idx, fewshot.sample_shots(train_y, shots, 4, 5))
    w, mean, std = fewshot.fit(train[idx], train_y[idx], 5, l2_reg=8.0)
    ours = fewshot.predict(w, mean, std, test)
    x = fewshot.design(train[idx], mean, std)
    ridge = Ridge(alpha=8.0, fit_intercept=False, solver="cholesky").fit(
        x, 2.0 * np.eye(5)[train_y[idx]] - 1.0)
    np.testing.assert_array_equal(ours, ridge.predict(fewshot.design(test, mean, std)).argmax(1))
  assert not np.array_equal(fewshot.sample_shots(train_y, 5, 0, 5),
                            fewshot.sample_shots(train_y, 5, 1, 5))
  metrics = fewshot.evaluate(train, train_y, test, test_y, shots=(1, 5), seeds=3,
                             num_classes=5)
  assert set(metrics) == {"1shot_top1", "1shot_top1_std", "5shot_top1", "5shot_top1_std"}
  assert metrics["5shot_top1"] >= metrics["1shot_top1"] - 0.05


def test_linear_probe_separable_reaches_100_percent():
  train, train_y, test, test_y = _blobs(50, 20, 4, 8, 0.05, seed=5)
  out = linear.evaluate({"a": train, "b": train[:, :4]}, train_y, {"a": test, "b": test[:, :4]},
                        test_y, num_classes=4, learning_rates=(1e-3, 0.1), epochs=20,
                        batch_size=32)
  assert out["top1"] == 1.0 and out["top5"] == 1.0
  assert set(out["grid"]) == {"a", "b"} and set(out["grid"]["a"]) == {"0.001", "0.1"}


def test_linear_probe_matches_logistic_regression_within_half_a_point():
  train, train_y, test, test_y = _blobs(300, 400, 5, 20, 1.0, seed=7)
  wd = 1e-2
  heads = linear.train_grid([train], train_y, num_classes=5, learning_rates=(0.05,),
                            epochs=60, batch_size=100, weight_decay=wd)
  ours = linear.logits(heads[0], test)[0].argmax(1)
  ref = LogisticRegression(C=1.0 / (len(train) * wd), max_iter=5000, tol=1e-8).fit(train,
                                                                                    train_y)
  ours_acc, ref_acc = np.mean(ours == test_y), ref.score(test, test_y)
  assert 0.5 < ref_acc < 0.99  # overlapping classes: the regulariser matters
  assert abs(ours_acc - ref_acc) <= 0.005, (ours_acc, ref_acc)
  assert np.mean(ours == ref.predict(test)) > 0.99


def test_attentive_probe_learns_which_token_carries_the_class():
  # One token of eight, at a random place, carries a marker and the class; the mean of
  # the tokens dilutes it (a linear probe on it gets ~65%), attention can find it.
  rng = np.random.default_rng(9)
  n, tokens, dim = 400, 8, 16
  labels = rng.integers(0, 3, n)
  x = rng.normal(size=(n, tokens, dim)).astype(np.float32)
  where = rng.integers(0, tokens, n)
  x[np.arange(n), where, :3] += 3 * np.eye(3)[labels]
  x[np.arange(n), where, 3] += 5
  views = np.stack([x, x[:, ::-1]], axis=1)  # [N, V=2, L, D]: clips with two views
  out = attentive.evaluate(views[:300], labels[:300], views[300:], labels[300:], num_classes=3,
                           num_heads=2, epochs=20, batch_size=50, learning_rate=1e-2)
  assert out["top1"] > 0.85, out


def test_evaluator_options_are_validated():
  o = registry.validate({"k": {"type": "knn", "features": "cls_last4"}})["k"]
  assert o["ks"] == (10, 20, 100, 200) and o["temperature"] == 0.07
  with pytest.raises(ConfigError, match="did you mean 'temperature'"):
    registry.validate({"k": {"type": "knn", "temprature": 0.1}})
  with pytest.raises(ConfigError, match="did you mean 'knn'"):
    registry.validate({"k": {"type": "kn"}})
  with pytest.raises(ConfigError, match="Unknown feature 'clss'"):
    registry.validate({"k": {"type": "linear", "features": ("cls", "clss")}})
  with pytest.raises(ConfigError, match="shots must be positive"):
    registry.validate({"f": {"type": "fewshot", "shots": (0, 5)}})
  with pytest.raises(ConfigError, match="unknown data key"):
    registry.validate({"f": {"type": "fewshot", "data": {"datset": "x"}}}, {"dataset": 1})
  # Checkpoints ranked by an evaluator's metric: it must run at every evaluation step.
  evals = registry.validate({"knn": {"type": "knn", "every_steps": 500}})
  registry.check_best_metric(evals, "knn/top1_k20", 500)
  registry.check_best_metric(evals, "top1", 100)
  with pytest.raises(ConfigError, match="every_steps=100"):
    registry.check_best_metric(evals, "knn/top1_k20", 100)
