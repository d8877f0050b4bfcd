"""`config.evals`: named evaluators, each with a type, its data, its cadence and options.

    config.evals.knn = dict(type="knn", features="cls", every_steps=1000)
    config.evals.fewshot = dict(type="fewshot", shots=(1, 5), data=dict(dataset="cifar10"))

Every evaluator takes the keys of `COMMON` and the options of its type (`TYPES`), each
with its default here and nowhere else. `validate` runs with the rest of the config,
before anything compiles: an unknown type or option is an error naming it (and the
closest known one), a value out of range an error naming the fix. This module imports
no JAX, so the config schema stays light.

Cadence (training runs): `every_steps=N` evaluates every N steps and at the end;
`every_steps=0` only at the end; `in_training=False` only in the standalone command
(`python -m vit_jax.evaluate`), which runs every evaluator once.

Data: `data` overrides keys of the run's `config.data` (dataset, data_dir, splits,
eval resizing...); the frozen-feature protocols fit on `data.train_split` and report on
`data.eval_split`, both read once with evaluation preprocessing (no augmentation), except
the probes trained on the fly (`MODES`), which read augmented training batches.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from vit_jax.errors import ConfigError

# Keys every evaluator takes.
COMMON = {
    "type": "",
    "every_steps": 0,  # N > 0: every N training steps and at the end; 0: at the end only
    "in_training": True,  # False: only in the standalone command
    "data": {},  # overrides of config.data
    "batch_size": -1,  # feature extraction / evaluation batch; -1: the run's eval batch
}

# The feature vectors the frozen-feature protocols can read (vit_jax.evals.features):
#   pooled           what the model's head reads (after pre_logits / fc_norm / MAP)
#   cls              the encoder's output at the class token
#   patch_mean       the mean of the encoder's patch tokens (prefix tokens left out)
#   cls_patch_mean   [cls, patch_mean] concatenated (2D)
#   cls_lastN        the class tokens of the last N blocks, each through the encoder's
#                    final LayerNorm, concatenated (N * D; DINOv2's linear protocol)
#   cls_lastN_patch_mean  the same plus the last block's patch mean ((N + 1) * D)
# and, for the attentive probe only, `tokens`: every patch token [L, D].
VECTOR_FEATURES = ("pooled", "cls", "patch_mean", "cls_patch_mean")
_LAST_N = re.compile(r"^cls_last(\d+)(_patch_mean)?$")
TOKENS = "tokens"

# How the probes that train (linear, attentive) see their training data, declared once:
# "cached": the features of data.train_split extracted once (augmentation-free) and held
# whole, the probe trained for `epochs` on them (small data). "on_the_fly": nothing
# dataset-sized is held: `steps` batches of data.train_split with config.data's training
# augmentation go through the frozen backbone straight into the probe's step (datasets
# too big to cache).
MODES = ("cached", "on_the_fly")
_TRAINING_DATA = {"mode": "cached", "steps": 1000}
# The options only one mode reads: given with the other mode they are an error, not
# silently ignored.
MODE_ONLY = {
    "linear": {"cached": ("epochs", "val_fraction"), "on_the_fly": ("steps", "val_split")},
    "attentive": {"cached": ("epochs", "warmup_epochs", "cache"),
                  "on_the_fly": ("steps", "warmup_steps")},
}

TYPES: dict[str, dict[str, Any]] = {
    # The model's own head on data.eval_split: top1, top5, loss, num_examples.
    "classification": {},
    # DINO's weighted kNN on L2-normalised features (Caron et al. 2021, eval_knn.py).
    "knn": {
        "features": "pooled",
        "ks": (10, 20, 100, 200),
        "temperature": 0.07,
        "weighting": "temperature",  # or "uniform" (a majority vote)
        "query_chunk": 1024,  # queries scored per device call
        "cache": True,
    },
    # DINOv2's linear probe: a grid of learning rates x feature choices trained at once,
    # the best on a held-out part of train, reported on the eval split.
    "linear": {
        "features": ("pooled",),
        "learning_rates": (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1),
        "epochs": 10,
        "batch_size_probe": 256,
        "momentum": 0.9,
        "weight_decay": 0.0,  # L2 on the weights: the loss is mean CE + wd/2 |W|^2
        "val_fraction": 0.1,  # of train, held out to choose the grid point
        "seed": 0,
        "cache": True,
        # mode (MODES): on the fly, the grid point is chosen on `val_split` (e.g.
        # train_split "train[1%:]" and val_split "train[:1%]"), whose features, like the
        # eval split's, are extracted once (and cached).
        **_TRAINING_DATA,
        "val_split": "",
    },
    # big_vision's fewshot_lsr: closed-form L2-regularised least squares on k shots per
    # class, features standardised, a bias feature of 100, targets in {-1, 1}.
    "fewshot": {
        "features": "pooled",
        "shots": (1, 5, 10, 25),
        "seeds": 3,
        "l2_reg": 2.0 ** 10,
        "cache": True,
    },
    # V-JEPA's attentive probe: learned queries cross-attend to the frozen patch tokens.
    # mode (MODES): cached holds every clip's tokens [N, V, L, D] on the device (small
    # data only); on the fly the probe trains on `steps` augmented batches of
    # batch_size_probe (warmup_steps, then cosine) and the eval split is streamed batch
    # by batch, so memory is bounded by the batch.
    "attentive": {
        "num_queries": 1,
        "num_heads": 4,
        "depth": 0,  # self-attention blocks on the tokens before the cross-attention
        "mlp_ratio": 4.0,
        "epochs": 20,
        "batch_size_probe": 64,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "warmup_epochs": 1,
        "seed": 0,
        "cache": True,
        **_TRAINING_DATA,
        "warmup_steps": 0,
        "dropout_rate": 0.0,  # on the pooled feature before the classifier, in training
        "label_smoothing": 0.0,
    },
}
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot", "attentive")


def parse_feature(name: str) -> tuple[str, int, bool]:
  """('vector'|'last'|'tokens', n, with_patch_mean) for a feature name; ConfigError if unknown."""
  if name in VECTOR_FEATURES:
    return "vector", 0, False
  if name == TOKENS:
    return "tokens", 0, False
  m = _LAST_N.match(name)
  if m and int(m.group(1)) >= 1:
    return "last", int(m.group(1)), bool(m.group(2))
  raise ConfigError(f"Unknown feature {name!r}: choose one of {VECTOR_FEATURES}, "
                    "'cls_lastN' or 'cls_lastN_patch_mean' (N >= 1, e.g. cls_last4).")


def features_of(options: Mapping[str, Any]) -> tuple[str, ...]:
  """The feature names an evaluator needs."""
  if options["type"] == "attentive":
    return (TOKENS,)
  f = options.get("features")
  if f is None:
    return ()
  return (f,) if isinstance(f, str) else tuple(f)


def options_of(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
  """The evaluator's full options (defaults filled in), validated."""
  entry = dict(entry)
  kind = entry.get("type", "")
  if kind not in TYPES:
    close = difflib.get_close_matches(str(kind), list(TYPES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"Invalid config: evals.{name}.type={kind!r}{hint}; choose one of "
                      f"{tuple(TYPES)}.")
  known = {**COMMON, **TYPES[kind]}
  unknown = [k for k in entry if k not in known]
  if unknown:
    hints = []
    for k in unknown:
      close = difflib.get_close_matches(k, list(known), n=1)
      hints.append(f"'evals.{name}.{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise ConfigError(f"Invalid config: unknown key {', '.join(hints)} for a {kind!r} "
                      f"evaluator; its keys: {sorted(known)}.")
  mode = entry.get("mode", _TRAINING_DATA["mode"])
  for owner, keys in MODE_ONLY.get(kind, {}).items():
    given = [k for k in keys if k in entry]
    if given and owner != mode and mode in MODES:
      raise ConfigError(f"Invalid config: evals.{name}.{given[0]} is read only with "
                        f"mode={owner!r}, and this {kind} evaluator has mode={mode!r}: drop "
                        f"it or set mode={owner!r}.")
  options = {**known, **entry}
  options["data"] = dict(options["data"] or {})
  _check(name, options)
  return options


def _check(name: str, o: dict[str, Any]) -> None:
  p = f"evals.{name}."
  checks = [
      (isinstance(o["every_steps"], int) and o["every_steps"] >= 0,
       f"{p}every_steps must be an int >= 0 (0: at the end of training only)"),
      (o["batch_size"] == -1 or o["batch_size"] > 0,
       f"{p}batch_size must be positive, or -1 for the run's eval batch size"),
  ]
  kind = o["type"]
  if kind in FEATURE_PROTOCOLS:
    for f in features_of(o):
      if kind != "attentive" and f == TOKENS:
        raise ConfigError(f"Invalid config: {p}features={f!r} is the attentive probe's "
                          "input; a vector protocol needs a vector feature (e.g. 'pooled').")
      parse_feature(f)
  if kind == "knn":
    checks += [
        (len(o["ks"]) > 0 and all(int(k) > 0 for k in o["ks"]), f"{p}ks must be positive ints"),
        (o["temperature"] > 0, f"{p}temperature must be > 0 (DINO: 0.07)"),
        (o["weighting"] in ("temperature", "uniform"),
         f"{p}weighting must be 'temperature' or 'uniform'"),
        (o["query_chunk"] > 0, f"{p}query_chunk must be positive")]
  elif kind == "linear":
    checks += [
        (len(features_of(o)) > 0, f"{p}features must name at least one feature"),
        (len(o["learning_rates"]) > 0 and all(lr > 0 for lr in o["learning_rates"]),
         f"{p}learning_rates must be positive"),
        (o["epochs"] > 0, f"{p}epochs must be positive"),
        (o["batch_size_probe"] > 0, f"{p}batch_size_probe must be positive"),
        (o["weight_decay"] >= 0, f"{p}weight_decay must be >= 0"),
        (0 < o["val_fraction"] < 1, f"{p}val_fraction must be in (0, 1)"),
        *_training_data_checks(p, o),
        (o["mode"] != "on_the_fly" or o["val_split"],
         f"{p}mode='on_the_fly' needs val_split, a split held out from training to choose "
         "the grid point (e.g. data.train_split='train[1%:]', val_split='train[:1%]')")]
  elif kind == "fewshot":
    checks += [
        (len(o["shots"]) > 0 and all(int(s) > 0 for s in o["shots"]),
         f"{p}shots must be positive ints"),
        (o["seeds"] >= 1, f"{p}seeds must be >= 1"),
        (o["l2_reg"] > 0, f"{p}l2_reg must be > 0 (big_vision: 2**10)")]
  elif kind == "attentive":
    checks += [
        (o["num_queries"] >= 1, f"{p}num_queries must be >= 1"),
        (o["num_heads"] >= 1, f"{p}num_heads must be >= 1"),
        (o["depth"] >= 0, f"{p}depth must be >= 0"),
        (o["epochs"] > 0, f"{p}epochs must be positive"),
        (o["batch_size_probe"] > 0, f"{p}batch_size_probe must be positive"),
        (o["learning_rate"] > 0, f"{p}learning_rate must be positive"),
        (0 <= o["dropout_rate"] < 1, f"{p}dropout_rate must be in [0, 1)"),
        (0 <= o["label_smoothing"] < 1, f"{p}label_smoothing must be in [0, 1)"),
        *_training_data_checks(p, o),
        (o["warmup_steps"] >= 0 and (o["mode"] != "on_the_fly" or o["warmup_steps"] < o["steps"]),
         f"{p}warmup_steps must be >= 0 and below steps={o['steps']}")]
  bad = [msg for ok, msg in checks if not ok]
  if bad:
    raise ConfigError("Invalid config: " + "; ".join(bad) + ".")


def _training_data_checks(p: str, o: Mapping[str, Any]) -> list[tuple[bool, str]]:
  """The checks of `_TRAINING_DATA` (mode, steps), the same for every probe that trains."""
  return [(o["mode"] in MODES, f"{p}mode must be 'cached' or 'on_the_fly'"),
          (isinstance(o["steps"], int) and o["steps"] >= 1,
           f"{p}steps must be an int >= 1 (training batches on the fly)")]


def validate(evals: Mapping[str, Any], data_keys: Mapping[str, Any] | None = None
             ) -> dict[str, dict[str, Any]]:
  """Every evaluator's options, validated (see the module docstring); ConfigError if not.

  data_keys: the known keys of config.data, to check each evaluator's `data` overrides.
  """
  out = {}
  for name, entry in dict(evals or {}).items():
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
      raise ConfigError(f"Invalid config: evaluator name {name!r}: use letters, digits "
                        "and '_' (it prefixes the metric names).")
    if not isinstance(entry, Mapping) and not hasattr(entry, "items"):
      raise ConfigError(f"Invalid config: evals.{name} must be a dict of settings "
                        f"(type=..., options), not {entry!r}.")
    options = options_of(name, dict(entry.items()))
    if data_keys is not None:
      unknown = [k for k in options["data"] if k not in data_keys]
      if unknown:
        raise ConfigError(f"Invalid config: evals.{name}.data has unknown data key(s) "
                          f"{unknown}; see vit_jax.data.default_config() for the keys.")
    out[name] = options
  return out


def native_problem(evals: Mapping[str, dict[str, Any]], base_resolution_mode: str
                   ) -> str | None:
  """What of the evaluators (validated options) cannot read packed native-resolution
  batches, with the fix; None if they all can.

  A packed batch gives one vector per image, the `pooled` feature
  (VisionTransformer.packed); the others (cls, patch means, intermediate blocks, the
  attentive probe's tokens) would need per-image bookkeeping of every token. Training
  batches on the fly (linear mode="on_the_fly") read images, not packed rows. An evaluator
  whose `data` sets resolution_mode="square" reads square images and may take any.
  """
  bad = []
  for name, o in evals.items():
    if o["data"].get("resolution_mode", base_resolution_mode) != "native":
      continue
    if o["type"] == "attentive":
      bad.append(f"evals.{name} (attentive: patch tokens)")
    elif o["type"] == "linear" and o["mode"] == "on_the_fly":
      bad.append(f"evals.{name} (linear mode='on_the_fly')")
    else:
      bad += [f"evals.{name}.features={f!r}" for f in features_of(o) if f != "pooled"]
  if not bad:
    return None
  return (f"{', '.join(bad)}: packed native-resolution batches give one 'pooled' feature "
          "per image; use features='pooled' (kNN, linear with mode='cached', few-shot) or "
          "classification, or set the evaluator's data.resolution_mode='square'")


def standalone_config() -> Any:
  """The schema of an evaluation config (`python -m vit_jax.evaluate --config FILE`).

  source: what to evaluate when --source is not given (a workdir, a checkpoint file or
    folder, `hf-hub:ORG/NAME`, or `random:MODEL_NAME` for a randomly initialised model,
    the baseline a trained backbone should beat).
  data: config.data (vit_jax.data.default_config()); the source's preprocessing is
    applied over it, each evaluator's `data` over that.
  batch_size: global batch of feature extraction (a multiple of the device count).
  seed: the random initialisation of `random:` sources.
  evals: the evaluators (this module's TYPES).
  """
  import ml_collections  # noqa: PLC0415

  from vit_jax.data import config as data_config_lib  # noqa: PLC0415

  c = ml_collections.ConfigDict()
  c.source = ""
  c.data = data_config_lib.default_config()
  c.batch_size = 128
  c.seed = 0
  c.evals = ml_collections.ConfigDict()
  return c


def validate_standalone(config: Any) -> dict[str, dict[str, Any]]:
  """ConfigError for unknown keys or values of an evaluation config; the evaluators' options."""
  from vit_jax.data import config as data_config_lib  # noqa: PLC0415

  schema = standalone_config()
  unknown = [k for k in config.keys() if k not in schema]
  if unknown:
    hints = []
    for k in unknown:
      close = difflib.get_close_matches(k, list(schema.keys()), n=1)
      hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise ConfigError(f"Invalid config: unknown key {', '.join(hints)}; an evaluation config "
                      f"has {sorted(schema.keys())} (vit_jax/evals/registry.py).")
  data_config_lib.as_config(config.data)  # unknown data keys and bad values
  if config.batch_size <= 0:
    raise ConfigError("Invalid config: batch_size must be positive.")
  if not config.evals:
    raise ConfigError("Invalid config: no evaluators in config.evals; add one, e.g. "
                      "config.evals.knn = dict(type='knn').")
  evals = validate(config.evals, data_config_lib.default_config())
  problem = native_problem(evals, config.data.resolution_mode)
  if problem:
    raise ConfigError(f"Invalid config: {problem}.")
  return evals


def check_best_metric(evals: Mapping[str, dict[str, Any]], best_metric: str,
                      eval_every_steps: int) -> None:
  """ConfigError unless checkpoint.best_metric is there at every evaluation step.

  The checkpointer ranks the steps it evaluated by that metric: one of the default
  evaluator's (`top1`, ...), or `<name>/<metric>` of an evaluator that runs in training at
  the default's cadence (it then runs at the same steps).
  """
  if "/" not in best_metric:
    return
  name = best_metric.split("/", 1)[0]
  o = evals.get(name)
  if o is None or not o["in_training"] or o["every_steps"] != eval_every_steps:
    raise ConfigError(
        f"Invalid config: checkpoint.best_metric={best_metric!r} must exist at every "
        f"evaluation step: declare evals.{name} with in_training=True and "
        f"every_steps={eval_every_steps} (eval_every_steps), or rank by 'top1'.")
