"""Runs a set of evaluators on a model: when they are due, on which data, with what result.

`Evaluators(evals, ...)` holds the validated `config.evals` of a run. In training, the
classification evaluator of the run's own head ("the default": config.eval_every_steps,
metrics `top1`, `top5`, `loss`, `num_examples` without a prefix, as results.json has
always had them) runs whenever any evaluator is due; the others add
`<name>/<metric>` keys. `run` returns numbers only (for metrics.jsonl, TensorBoard and
checkpoint selection); what is not a number (the chosen feature of a linear sweep, its
grid) is in `details`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from vit_jax.driver import parallel
from vit_jax.errors import ConfigError
from vit_jax.evals import attentive, classification, features, fewshot, knn, linear, registry


class Evaluators:
  """The evaluators of one run (see the module docstring).

  Args:
    evals: `config.evals` (validated here).
    data_config: the run's config.data; each evaluator's `data` overrides it.
    mesh: the devices to evaluate on.
    eval_batch_size: the batch of evaluators whose batch_size is -1.
    default_every: None: no default classification evaluator; else its cadence
      (config.eval_every_steps; 0: at the end only).
    training: only evaluators with in_training=True run (at their cadence); False runs
      every one on each `run` (the standalone command).
    cache_dir: where features are cached (None: in memory, for one `run`).
    preprocessing: config.data keys of the backbone's input, applied over data_config.
  """

  def __init__(self, evals: Mapping[str, Any], data_config: Mapping[str, Any], *,
               mesh: jax.sharding.Mesh, eval_batch_size: int, default_every: int | None,
               training: bool, cache_dir: str | None = None,
               preprocessing: Mapping[str, Any] | None = None):
    from vit_jax.data import config as data_config_lib  # noqa: PLC0415

    self.options = registry.validate(evals, data_config_lib.default_config())
    if training:
      self.options = {k: o for k, o in self.options.items() if o["in_training"]}
    self.base_data = dict(data_config.to_dict() if hasattr(data_config, "to_dict")
                          else data_config)
    self.base_data.update(preprocessing or {})
    self.mesh = mesh
    self.eval_batch_size = eval_batch_size
    self.default_every = default_every
    self.training = training
    self.cache = features.FeatureCache(cache_dir)
    self.details: dict[str, Any] = {}
    n = jax.device_count()
    for name, o in self.options.items():
      sizes = {"batch_size": self.batch_size(o)}
      if o.get("mode") == "on_the_fly":  # the global training batch, split over devices
        sizes["batch_size_probe"] = o["batch_size_probe"]
      for key, size in sizes.items():
        if size % n:
          raise ConfigError(f"evals.{name}.{key}={size} is not divisible by the {n} "
                            f"devices; use a multiple of {n}.")

  def batch_size(self, options: Mapping[str, Any]) -> int:
    return self.eval_batch_size if options["batch_size"] == -1 else options["batch_size"]

  def data_config(self, options: Mapping[str, Any]) -> dict[str, Any]:
    return {**self.base_data, **options["data"]}

  def due(self, step: int, last: bool) -> bool:
    """Whether any evaluator runs after training step `step` (`last`: the final one)."""
    if last:
      return True
    every = [o["every_steps"] for o in self.options.values()]
    if self.default_every is not None:
      every.append(self.default_every)
    return any(e and step % e == 0 for e in every)

  def run(self, model: nn.Module, params: Any, *, step: int | None = None, last: bool = True,
          default_step: Callable | None = None,
          fingerprint: Callable[[], str] | None = None) -> dict[str, float]:
    """Every evaluator due at `step` (all when `last` or outside training) on params.

    default_step: the jitted classification step of the default evaluator (the driver's,
    with its parameter shardings); None builds one.
    fingerprint: the backbone's identity for the feature cache (default: a hash of the
    parameters, computed only if a cache is read or written).
    """
    results: dict[str, float] = {}
    self.details = {}
    if self.default_every is not None:
      step_fn = default_step or classification.jit_step(
          model, self._num_classes(self.base_data), self.mesh)
      results.update(classification.evaluate(step_fn, params, self.base_data,
                                              batch_size=self.eval_batch_size, mesh=self.mesh))
    source = features.FeatureSource(
        model, params, mesh=self.mesh, cache=self.cache,
        fingerprint=fingerprint or (lambda: features.params_fingerprint(model, params)))
    due = {name: o for name, o in self.options.items()
           if not self.training or last or (o["every_steps"] and step % o["every_steps"] == 0)}
    self._prefetch(due, source)
    for name, o in due.items():
      t = time.perf_counter()
      metrics, details = self._run_one(name, o, model, params, source)
      logging.info("Evaluator %s (%s): %s in %.1fs.", name, o["type"], metrics,
                   time.perf_counter() - t)
      results.update({f"{name}/{k}": v for k, v in metrics.items()})
      if details:
        self.details[name] = details
    return results

  def _prefetch(self, due: Mapping[str, Any], source: features.FeatureSource) -> None:
    """Every feature the due evaluators read from one data config and split, in one pass."""
    groups: dict[str, tuple[dict, list[str], int, bool, set[str]]] = {}
    for o in due.values():
      if o["type"] == "classification":
        continue
      if o["type"] == "attentive" and o["mode"] == "on_the_fly":
        continue  # streams both splits through the backbone; nothing extracted ahead
      cfg = self.data_config(o)
      on_the_fly = o["type"] == "linear" and o["mode"] == "on_the_fly"
      splits = {o["val_split"] if on_the_fly else cfg["train_split"], cfg["eval_split"]}
      key = json.dumps([cfg, self.batch_size(o), o["cache"]], sort_keys=True, default=str)
      entry = groups.setdefault(key, (cfg, [], self.batch_size(o), o["cache"], set()))
      entry[1].extend(n for n in registry.features_of(o) if n not in entry[1])
      entry[4].update(splits)
    for cfg, names, batch, use_cache, splits in groups.values():
      for split in sorted(splits):
        source.get(cfg, split, names, batch_size=batch, use_cache=use_cache)

  @staticmethod
  def _num_classes(data_config: Mapping[str, Any]) -> int:
    from vit_jax import data  # noqa: PLC0415

    return data.get_info(data_config).num_classes

  def _run_one(self, name: str, o: Mapping[str, Any], model: nn.Module, params: Any,
               source: features.FeatureSource) -> tuple[dict[str, float], dict[str, Any]]:
    cfg = self.data_config(o)
    num_classes = self._num_classes(cfg)
    batch = self.batch_size(o)
    if o["type"] == "classification":
      if getattr(model, "num_classes", None) != num_classes:
        raise ConfigError(f"evals.{name}: a classification evaluator scores the model's own "
                          f"head, which has {model.num_classes} outputs, and "
                          f"{cfg['dataset']} has {num_classes} classes: use a frozen-feature "
                          "protocol (knn, linear, fewshot, attentive) instead.")
      step_fn = classification.jit_step(model, num_classes, self.mesh)
      return classification.evaluate(step_fn, params, cfg, batch_size=batch,
                                     mesh=self.mesh), {}
    names = registry.features_of(o)
    get = lambda split: source.get(cfg, split, names, batch_size=batch, use_cache=o["cache"])
    if o["type"] == "linear" and o["mode"] == "on_the_fly":
      return self._linear_on_the_fly(o, cfg, names, num_classes, source, get)
    if o["type"] == "attentive" and o["mode"] == "on_the_fly":
      return self._attentive_on_the_fly(o, cfg, num_classes, source), {}
    train, test = get(cfg["train_split"]), get(cfg["eval_split"])
    if o["type"] == "knn":
      f = names[0]
      return knn.evaluate(train[f], train["label"], test[f], test["label"], ks=o["ks"],
                          num_classes=num_classes, temperature=o["temperature"],
                          weighting=o["weighting"], query_chunk=o["query_chunk"]), {}
    if o["type"] == "fewshot":
      f = names[0]
      return fewshot.evaluate(train[f], train["label"], test[f], test["label"],
                              shots=o["shots"], seeds=o["seeds"], num_classes=num_classes,
                              l2_reg=o["l2_reg"]), {}
    if o["type"] == "linear":
      out = linear.evaluate({k: train[k] for k in names}, train["label"],
                            {k: test[k] for k in names}, test["label"],
                            num_classes=num_classes, learning_rates=o["learning_rates"],
                            epochs=o["epochs"], batch_size=o["batch_size_probe"],
                            momentum=o["momentum"], weight_decay=o["weight_decay"],
                            val_fraction=o["val_fraction"], seed=o["seed"])
      return _split_linear(out, names)
    # attentive
    keys = _ATTENTIVE_PROBE + ("epochs", "warmup_epochs")
    out = attentive.evaluate(train["tokens"], train["label"], test["tokens"], test["label"],
                             num_classes=num_classes, batch_size=o["batch_size_probe"],
                             **{k: o[k] for k in keys})
    return {**out, "num_examples": len(test["label"])}, {}

  def _linear_on_the_fly(self, o, cfg, names, num_classes, source, get):
    """The linear grid trained on augmented training batches through the frozen backbone."""
    from vit_jax import data  # noqa: PLC0415

    bs = o["batch_size_probe"]  # divides the device count (checked in __init__)
    sharding = parallel.batch_sharding(self.mesh)
    stream = data.train_iterator(cfg, global_batch_size=bs, sharding=sharding, seed=o["seed"])
    model, params = source.model, source.params
    feature_fn = jax.jit(lambda p, x: features.compute(model, p, x, names))

    def batches():
      for batch in stream:
        out = feature_fn(params, batch["image"])
        yield tuple(out[n] for n in names), batch["label"]

    val, test = get(o["val_split"]), get(cfg["eval_split"])
    dims = [val[n].shape[1] for n in names]
    heads = linear.train_grid_stream(batches(), dims, steps=o["steps"], num_classes=num_classes,
                                     learning_rates=o["learning_rates"], momentum=o["momentum"],
                                     weight_decay=o["weight_decay"])
    out = linear.select_and_test(heads, names, val, val["label"], test, test["label"],
                                 learning_rates=o["learning_rates"], num_classes=num_classes)
    return _split_linear(out, names)


  def _attentive_on_the_fly(self, o, cfg, num_classes, source) -> dict[str, float]:
    """The attentive probe trained on augmented training batches through the frozen
    backbone, then tested on the eval split streamed batch by batch (nothing cached)."""
    from vit_jax import data  # noqa: PLC0415

    model, params = source.model, source.params
    features.check_supported(model, (registry.TOKENS,))
    sharding = parallel.batch_sharding(self.mesh)
    tokens_of = lambda p, x: features.compute(model, p, x, (registry.TOKENS,))[registry.TOKENS]
    train = data.train_iterator(cfg, global_batch_size=o["batch_size_probe"],
                                sharding=sharding, seed=o["seed"])
    probe, probe_params = attentive.train_stream(
        ((b["image"], b["label"]) for b in train), tokens_of, params, mesh=self.mesh,
        num_classes=num_classes, steps=o["steps"], warmup_steps=o["warmup_steps"],
        **{k: o[k] for k in _ATTENTIVE_PROBE})
    test = data.eval_iterator(cfg, global_batch_size=self.batch_size(o), sharding=sharding)
    return attentive.evaluate_stream(
        probe, probe_params, ((b["image"], b["label"], b["mask"]) for b in test), tokens_of,
        params, mesh=self.mesh, num_classes=num_classes)


# The attentive probe's options both modes pass on (registry.TYPES["attentive"]).
_ATTENTIVE_PROBE = ("num_queries", "num_heads", "depth", "mlp_ratio", "learning_rate",
                    "weight_decay", "seed", "dropout_rate", "label_smoothing")


def _split_linear(out: Mapping[str, Any], names) -> tuple[dict[str, float], dict[str, Any]]:
  """A sweep's result as (numbers, the rest): the chosen feature by name goes to details."""
  numbers = {k: v for k, v in out.items() if isinstance(v, (int, float))}
  numbers["best_features_index"] = list(names).index(out["best_features"])
  return numbers, {k: v for k, v in out.items() if k not in numbers}


def format_table(results: Mapping[str, Any]) -> str:
  """A short table: evaluator, metric, value (percent for accuracies)."""
  rows = []
  for key in sorted(results):
    value = results[key]
    evaluator, _, metric = key.rpartition("/")
    evaluator = evaluator or "classification"
    if isinstance(value, float) and ("top" in metric or "shot" in metric) and (
        0.0 <= value <= 1.0):
      shown = f"{100 * value:.2f}%"
    elif isinstance(value, (float, np.floating)):
      shown = f"{value:.4g}"
    else:
      shown = str(value)
    rows.append((evaluator, metric, shown))
  widths = [max(len(r[i]) for r in rows + [("evaluator", "metric", "value")]) for i in range(3)]
  line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  return "\n".join([line(("evaluator", "metric", "value"))] + [line(r) for r in rows])
