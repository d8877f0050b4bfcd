"""The schema of a training config, and its validation.

Every config in `configs/` starts from `base_config()` and changes what it needs.
`validate(config)` runs before anything compiles: a key the schema does not know
(a typo in a config file or on the command line) is an error that names the key
and the closest known one, so no setting is silently ignored.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import ml_collections
from ml_collections import config_dict

from vit_jax import data
from vit_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
# model_name for "the architecture of init_from.path" (checkpoint.load_pretrained).
FROM_CHECKPOINT = "from_checkpoint"
SCHEDULES = ("cosine", "linear", "rsqrt", "constant")
MODES = ("train", "eval")


def base_config() -> ml_collections.ConfigDict:
  """All keys a training config may set, with their defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Model: a registered name plus overrides passed to `create_model` (e.g. dropout_rate).
  c.model_name = "ViT-B_16"
  c.model = model_group()
  # Data: see vit_jax.data.default_config() for the keys.
  c.data = data.default_config()
  c.batch_size = 512  # global, over all devices and hosts
  c.eval_batch_size = -1  # -1: same as batch_size
  c.total_steps = 1000
  c.accum_steps = 1  # split each batch into this many micro-batches; same update

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.9  # sgd
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9  # adamw
  c.optimizer.b2 = 0.999  # adamw
  c.optimizer.eps = 1e-8  # adamw
  c.optimizer.weight_decay = 0.0  # decoupled; only on kernels (not biases, norms, posemb, cls)
  c.optimizer.mu_dtype = ""  # "bfloat16" stores the first moment / momentum in bf16
  c.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
  c.freeze = ()  # regexes over "/"-joined parameter paths that are not updated

  c.lr = ml_collections.ConfigDict()
  c.lr.base = 0.03
  c.lr.schedule = "cosine"
  c.lr.warmup_steps = 0
  c.lr.end_value = 0.0  # cosine/linear: value reached at total_steps
  c.lr.layer_decay = 1.0  # <1: layer-wise decay, lr * decay^(depth - layer)

  c.label_smoothing = 0.0
  c.mixup = ml_collections.ConfigDict()
  c.mixup.mixup_alpha = 0.0
  c.mixup.cutmix_alpha = 0.0
  c.mixup.switch_prob = 0.5  # with both: probability of cutmix for a batch
  c.ema_decay = 0.0  # >0: keep an EMA of the parameters and evaluate it

  # Fine-tuning: initialise from a pretrained file (never resumes its step counter).
  c.init_from = ml_collections.ConfigDict()
  c.init_from.path = ""
  c.init_from.resize_posemb = True
  c.init_from.posemb_method = "bilinear"
  c.init_from.strict = False
  c.init_from.reset_head = False  # start from a zero head even when the class count matches
  # model_name="from_checkpoint": train, evaluate and predict with the checkpoint's input
  # normalisation (mean/std or value range), evaluation crop and interpolation, at
  # data.image_size.
  c.init_from.preprocessing = True
  # Video (ViViT) models initialised from an image ViT (vit_jax.checkpoint.inflate); a video
  # checkpoint (this project's or Scenic's) is copied as it is and needs the defaults.
  c.init_from.kernel_init_method = "central_frame"  # tubelet kernel: or "average", "repeat"
  c.init_from.temporal_init = "random"  # factorised_encoder's temporal encoder: or "image"
  c.init_from.time_attention_init = "copy"  # factorised_self_attention's time attention: or "zero"

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1  # devices per FSDP group; params and optimizer state sharded over it

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 2  # the latest K ...
  c.checkpoint.keep_best = 1  # ... plus the best by best_metric (evaluation steps only)
  c.checkpoint.best_metric = "top1"
  c.checkpoint.async_save = True

  c.log_every_steps = 50
  c.eval_every_steps = 500  # 0: only at the end
  # Named evaluators beside the default classification of the run's own head (kNN,
  # linear probes, few-shot, attentive probes...): vit_jax/evals/registry.py.
  c.evals = ml_collections.ConfigDict()
  c.progress_bar = True
  return c


def model_group() -> ml_collections.ConfigDict:
  """`config.model`: one typed key per option `create_model` accepts, unset (None).

  Unset keys keep the model's default; declaring them all is what lets any option be
  set from the command line (`--config.model.stochastic_depth=0.1`) on any config,
  with its type checked. Options a model does not have are an error at validation.
  """
  from vit_jax.models import registry  # noqa: PLC0415 (the registry imports flax)

  # Not type-safe: model.remat may be set to True/False over the "auto" default below.
  group = ml_collections.ConfigDict(type_safe=False)
  for name, value_type in sorted(registry.option_types().items()):
    group[name] = config_dict.placeholder(value_type)
  # Rematerialise (recompute activations in the backward pass) only if the train step
  # would not fit in device memory without it; vit_jax.driver.train.compile_train_step decides.
  group.remat = "auto"
  return group


# model.remat: a bool or "auto". The default is the string "auto", so ml_collections parses
# --config.model.remat=True as the string "True": accept both spellings.
_REMAT_SETTINGS = {"true": True, "false": False, "auto": "auto"}


def remat_setting(value: Any) -> bool | str:
  """model.remat as True, False or "auto"; ValueError for anything else."""
  if isinstance(value, bool):
    return value
  if isinstance(value, str) and value.lower() in _REMAT_SETTINGS:
    return _REMAT_SETTINGS[value.lower()]
  raise ConfigError(f"Invalid config: model.remat must be True, False or 'auto' (remat only "
                   f"if the train step would not fit in device memory without it), not "
                   f"{value!r}.")


def model_options(model: Any) -> dict[str, Any]:
  """`config.model` as create_model keyword arguments. remat="auto" builds the model
  without remat; the driver switches it on when the train step does not fit."""
  options = {k: v for k, v in dict(model).items() if v is not None}  # None: model default
  if "remat" in options:
    options["remat"] = remat_setting(options["remat"]) is True
  return options


def _unknown_keys(config: Any, schema: Any, prefix: str) -> list[str]:
  problems = []
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
      problems.append(f"unknown config key '{path}'{hint}")
    elif key in ("model", "evals"):
      continue  # validated by create_model and vit_jax.evals.registry
    elif isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
        problems.append(f"config key '{path}' must be a group of settings")
      else:
        problems += _unknown_keys(config[key], schema[key], path + ".")
  return problems


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError listing every unknown key and every impossible value."""
  problems = _unknown_keys(config, base_config(), "")
  if problems:
    raise ConfigError("Invalid config: " + "; ".join(problems) +
                     ". See vit_jax/driver/config.py:base_config() for the known keys.")
  checks = [
      (config.optimizer.name in OPTIMIZERS, f"optimizer.name must be one of {OPTIMIZERS}"),
      (config.lr.schedule in SCHEDULES, f"lr.schedule must be one of {SCHEDULES}"),
      (config.total_steps > 0, "total_steps must be positive"),
      (config.batch_size > 0, "batch_size must be positive"),
      (config.accum_steps >= 1, "accum_steps must be >= 1"),
      (config.batch_size % config.accum_steps == 0,
       f"batch_size {config.batch_size} is not divisible by accum_steps {config.accum_steps}"),
      # Checked only for a possible total_steps (its own message covers the rest).
      (config.total_steps <= 0 or 0 <= config.lr.warmup_steps <= config.total_steps,
       f"lr.warmup_steps={config.lr.warmup_steps} must be within [0, total_steps="
       f"{config.total_steps}]: for a shorter run also pass --config.lr.warmup_steps=N "
       f"with 0 <= N <= {config.total_steps}"),
      (0 < config.lr.layer_decay <= 1, "lr.layer_decay must be in (0, 1]"),
      (0 <= config.ema_decay < 1, "ema_decay must be in [0, 1)"),
      (config.optimizer.mu_dtype in ("", "bfloat16", "float32"),
       "optimizer.mu_dtype must be '', 'bfloat16' or 'float32'"),
      (config.mesh.fsdp >= 1, "mesh.fsdp must be >= 1"),
      (config.checkpoint.keep >= 1, "checkpoint.keep must be >= 1"),
  ] + _video_init_checks(config) + _native_checks(config)
  bad = [msg for ok, msg in checks if not ok]
  if bad:
    raise ConfigError("Invalid config: " + "; ".join(bad) + ".")
  _check_model_options(config)
  from vit_jax.evals import registry as evals_registry  # noqa: PLC0415

  evals = evals_registry.validate(config.evals, data.default_config())
  evals_registry.check_best_metric(evals, config.checkpoint.best_metric, config.eval_every_steps)


def _native_checks(config: ml_collections.ConfigDict) -> list[tuple[bool, str]]:
  """What data.resolution_mode='native' (packed batches) does not combine with."""
  if config.data.resolution_mode != "native":
    return []
  from vit_jax.evals import registry as evals_registry  # noqa: PLC0415

  mix = config.mixup
  problem = evals_registry.native_problem(
      evals_registry.validate(config.evals, data.default_config()), "native")
  return [
      (not (mix.mixup_alpha or mix.cutmix_alpha),
       "mixup/cutmix mix images of one size; with data.resolution_mode='native' set "
       "mixup.mixup_alpha=0 and mixup.cutmix_alpha=0"),
      (problem is None, problem),
  ]


def _check_model_options(config: ml_collections.ConfigDict) -> None:
  """Builds the module (no parameters): unknown options and bad values fail here."""
  from vit_jax.models import registry  # noqa: PLC0415

  options = model_options(config.model.to_dict())  # a bad model.remat raises here
  name = config.model_name
  if name == FROM_CHECKPOINT:
    if not config.init_from.path:
      raise ConfigError(f"Invalid config: model_name={FROM_CHECKPOINT!r} takes the "
                        "architecture from the checkpoint: set --config.init_from.path="
                        "FILE_OR_FOLDER (or hf-hub:ORG/NAME).")
    name = "ViT-Ti_16"  # the options are checked on a stand-in; the file decides the rest
  try:
    model = registry.create_model(name, num_classes=1, **options)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"Invalid config: model_name={config.model_name!r}, model: {e}") from e
  if config.model_name != FROM_CHECKPOINT:
    _check_patch_grid(config, model)


def _check_patch_grid(config: ml_collections.ConfigDict, model) -> None:
  """data.image_size must be a whole number of patches (found here, not at the first trace)."""
  patch = getattr(model, "patch_size", None)
  if patch is None:
    return
  ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[-2:]
  size = config.data.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  if h % ph or w % pw:
    fit = [max(ph, h // ph * ph), max(pw, w // pw * pw)]
    fix = fit[0] if fit[0] == fit[1] and isinstance(size, int) else tuple(fit)
    raise ConfigError(
        f"Invalid config: data.image_size={size!r} is not divisible by the patch size "
        f"{ph}x{pw} of {config.model_name}: pass --config.data.image_size={fix} (or another "
        f"multiple of the patch), or a model with another patch size.")


def describe_override_error(argv: list[str], error: Exception) -> str:
  """A message for a `--config.a.b=...` override of a key the config does not have.

  ml_collections reports it as "'b'\nDid you mean "c" instead of "b"?" without the path.
  """
  text = str(error).encode().decode("unicode_escape")
  bad = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)'", text)
  hint = re.search(r'Did you mean "([A-Za-z0-9_]+)"', text)
  overrides = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  path = next((o for o in overrides if bad and bad.group(1) in o.split(".")), None)
  if path is None:
    return f"Invalid config override: {text.strip()}"
  path = path.removeprefix("config.")
  message = f"Invalid config: unknown config key '{path}'"
  if hint:
    parts = path.split(".")
    parts[parts.index(bad.group(1))] = hint.group(1)
    message += f" (did you mean '{'.'.join(parts)}'?)"
  return message + ". See vit_jax/driver/config.py:base_config() for the known keys."


def _video_init_checks(config: ml_collections.ConfigDict) -> list[tuple[bool, str]]:
  """init_from's ViViT keys: known values, and set only for a video model."""
  from vit_jax.checkpoint import inflate  # noqa: PLC0415 (keeps flax out of config)
  from vit_jax.models import registry  # noqa: PLC0415

  c, default = config.init_from, base_config().init_from
  keys = {"kernel_init_method": inflate.KERNEL_INIT_METHODS,
          "temporal_init": inflate.TEMPORAL_INITS,
          "time_attention_init": inflate.TIME_ATTENTION_INITS}
  checks = [(c[k] in choices, f"init_from.{k} must be one of {choices}")
            for k, choices in keys.items()]
  changed = [k for k in keys if c[k] != default[k]]
  try:
    is_video = (config.model_name != FROM_CHECKPOINT and
                "tubelet_size" in registry.model_kwargs(config.model_name))
  except ValueError:  # an unknown model name is create_model's error to report
    is_video = True
  checks.append((is_video or not changed,
                 f"init_from.{', init_from.'.join(changed)} only apply to video (ViViT) "
                 f"models, not {config.model_name}"))
  return checks


def build_model(config: Any, num_classes: int, pretrained: Any = None):
  """The module a config (ConfigDict or its config.json dict) describes.

  model_name=FROM_CHECKPOINT: the architecture of `init_from.path` (`pretrained`, a
  `checkpoint.Pretrained`, when the caller has loaded it already) with a head for
  `num_classes` and the config's `model` options on top (dropout, stochastic depth,
  dtype, ...). remat="auto" builds the model without remat (see model_options).
  """
  from vit_jax import checkpoint, models  # noqa: PLC0415 (flax stays out of the schema)

  options = model_options(dict(config["model"]))
  if config["model_name"] != FROM_CHECKPOINT:
    return models.create_model(config["model_name"], num_classes=num_classes, **options)
  if pretrained is None:
    pretrained = checkpoint.load_pretrained(config["init_from"]["path"])
  return pretrained.model.clone(num_classes=num_classes, **options)


def with_pretrained_preprocessing(config: ml_collections.ConfigDict, preprocessing: Any
                                  ) -> ml_collections.ConfigDict:
  """A copy of `config` whose data normalisation and eval crop are the checkpoint's.

  data.image_size stays (the position embedding is resized to it); the evaluation resize
  keeps the checkpoint's crop fraction at that size.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  over = preprocessing.data_overrides(data.config.image_size(config.data))
  del over["image_size"]  # unchanged (the tuple form would not fit an int key)
  # A video checkpoint's clip (num_frames, stride) stays the config's choice, as the size
  # does: VideoMAE's table follows any frame count, ViViT's learned one refuses another.
  over.pop("num_frames", None)
  over.pop("stride", None)
  config.data.update(over)
  return config
