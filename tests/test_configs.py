"""Every config in configs/, with every argument it accepts, loads, validates and builds.

Each `configs/NAME.py[:ARG]` is read as `--config` reads it, validated as the driver
validates it, and its model, optimizer and input shape are built abstractly
(`jax.eval_shape`: no dataset, no parameters in memory, nothing compiled), so a config
that would fail at start-up of a multi-day run fails here in seconds.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re

import jax
import jax.numpy as jnp
import pytest
from absl import flags

from tests.helpers import CONFIGS, REPO, load_config
from vit_jax import data, models
from vit_jax.data import config as data_config
from vit_jax.driver import config as config_lib
from vit_jax.driver import optim, train
from vit_jax.models import registry

CONFIG_FILES = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py"))

# The class count of each dataset the configs name: no config states its own (the driver
# reads it from the prepared dataset). A `folder:` dataset has one class per class folder:
# Kinetics-400/600 and SSv2 have their published label sets; Epic-Kitchens' action count
# (one class per (verb, noun) pair) depends on the folder, and any count builds.
NUM_CLASSES = {
    "digits": 10,
  "digits/canvas": 10,
    "moving_digits": 20,  # 10 digits x 2 directions
    "moving_digits/tiny": 20,
    "cifar10": 10,
    "cifar100": 100,
    "imagenet2012": 1000,
    "folder:data/kinetics400": 400,
    "folder:data/kinetics600": 600,
    "folder:data/something_something_v2": 174,
    "folder:data/epic_kitchens": 3806,
}
VIDEO_DATASETS = {"moving_digits", "folder:data/kinetics400", "folder:data/kinetics600",
                  "folder:data/something_something_v2", "folder:data/epic_kitchens",
                  "moving_digits/tiny"}

# ViT-B/16 at 224 px with 1000 classes (docs/published_results.md; tests/models/test_registry.py).
VIT_B16_PARAMS_224_1K = 86_567_656
VIT_B16_WIDTH = 768


def _module(name: str):
  spec = importlib.util.spec_from_file_location(f"{name}_config", os.path.join(CONFIGS,
                                                                             f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_arguments(name: str) -> list[str]:
  """The arguments `configs/NAME.py:ARG` accepts, from its docstring and its own tables.

  "" is the file without an argument (get_config's default).
  """
  module = _module(name)
  if not inspect.signature(module.get_config).parameters:
    return [""]
  if name == "vit_b16_finetune":  # DATASET
    return ["", *module.TOTAL_STEPS]
  if name == "vivit_paper":  # DATASET[,SIZE]
    return ["", *module._DATASETS, *(f"{d},{s}" for d in module._DATASETS for s in ("B", "L"))]
  if name == "vit_digits":  # [canvas]
    return ["", "canvas"]
  if name == "vivit_moving_digits":  # VARIANT[,IMAGE_RUN]
    options = ("", *(f",{r}" for r in module.IMAGE_RUNS))
    return ["", *(v + o for v in module.VARIANTS for o in options)]
  if name == "finetune_pretrained":  # RECIPE
    return ["", *module.RECIPES]
  if name == "videomae_finetune":  # RECIPE
    return ["", *module.RECIPES]
  if name == "timesformer_k400":  # "" or smoke
    return list(module.ARGS)
  raise AssertionError(f"configs/{name}.py takes an argument: list the values its docstring "
                       "names in tests/test_configs.py:config_arguments.")


def expected_model(name: str, arg: str) -> str:
  """The model each config's docstring says it trains."""
  if name == "deit3_b16_i1k":
    return "DeiT3-B_16"
  if name in ("vit_b16_finetune", "vit_b16_i1k_augreg", "deit_b16_i1k"):
    return "ViT-B_16"
  if name in ("vit_digits", "vit_digits_finetune"):
    # vit_digits_finetune: "the vit_digits model"; :canvas has the 4x4 patches of ViViT-Nano_4x2.
    return "ViT-Nano_4" if arg == "canvas" else "ViT-Nano_2"
  if name == "vit_s16_i1k":
    return "ViT-S_16"
  if name in ("finetune_pretrained", "videomae_finetune"):  # the model of init_from.path
    return config_lib.FROM_CHECKPOINT
  if name == "vivit_paper":  # ViViT-{B,L}/16x2, default L
    size = arg.split(",")[1] if "," in arg else "L"
    return f"ViViT-{size}_16x2"
  if name == "vivit_moving_digits":
    # ViViT-Nano: 4x4 patches x 2-frame tubelets (also from the vit_canvas image run); 2x2
    # patches from the vit_digits image model; one frame per token for frame_average.
    variant = arg.split(",")[0] or "spatio_temporal"
    patch = "2" if "vit_digits" in arg else "4"
    return f"ViViT-Nano_{patch}x{1 if variant == 'frame_average' else 2}"
  if name == "timesformer_k400":  # TimeSformer-B; the smoke run TimeSformer-Mu
    return "TimeSformer-Mu_4" if arg == "smoke" else "TimeSformer-B_16"
  raise AssertionError(f"configs/{name}.py: add the model its docstring names here.")


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory) -> str:
  """A tiny transformers DINOv2 folder (released names and shapes) for from_checkpoint configs."""
  import json  # noqa: PLC0415

  import numpy as np  # noqa: PLC0415
  import safetensors.numpy  # noqa: PLC0415

  with open(os.path.join(REPO, "tests", "checkpoint", "data", "hf_vision_keys.json")) as f:
    entry = json.load(f)["models"]["dinov2"]
  folder = tmp_path_factory.mktemp("dinov2")
  rng = np.random.default_rng(0)
  safetensors.numpy.save_file({k: rng.normal(size=s).astype(np.float32)
                               for k, s in entry["keys"].items()},
                              str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  return str(folder)


@pytest.fixture(scope="module")
def pretrained_video_folder(tmp_path_factory) -> str:
  """A tiny transformers VideoMAE folder (released names and shapes), 4x4 patches."""
  from tests.checkpoint import _hf_video  # noqa: PLC0415

  return str(_hf_video.folder(tmp_path_factory.mktemp("videomae"), "vmae_cls", patch=4,
                              image=16)[0])


CASES = [(name, arg) for name in CONFIG_FILES for arg in config_arguments(name)]


def _spec(name: str, arg: str) -> str:
  return f"configs/{name}.py" + (f":{arg}" if arg else "")


def input_shape(c) -> tuple[int, ...]:
  """One example's shape as vit_jax.data.get_info computes it, from config.data alone."""
  h, w = data_config.image_size(c.data)
  return (c.data.num_frames, h, w, 3) if c.data.dataset in VIDEO_DATASETS else (h, w, 3)


def num_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_docstring_states_the_command_and_the_arguments(name):
  doc = _module(name).__doc__
  assert f"python -m vit_jax.main --config configs/{name}.py" in doc
  for arg in config_arguments(name):
    for part in filter(None, arg.split(",")):
      assert part in doc, f"configs/{name}.py accepts {arg!r}; its docstring does not say so"


@pytest.mark.parametrize("name,arg", CASES, ids=[_spec(n, a)[8:] for n, a in CASES])
def test_config_loads_validates_and_builds(name, arg, pretrained_folder,
                                           pretrained_video_folder):
  c = load_config(_spec(name, arg))
  if c.model_name == config_lib.FROM_CHECKPOINT:  # the user names the file
    assert not c.init_from.path
    c.init_from.path = (pretrained_video_folder if c.data.dataset in VIDEO_DATASETS
                        else pretrained_folder)
  config_lib.validate(c)
  data.validate(c.data)
  assert c.model_name == expected_model(name, arg)
  # Every option create_model accepts is a key, so the command line can set it here.
  assert set(registry.option_types()) <= set(c.model.keys())
  assert c.data.dataset in NUM_CLASSES, f"add {c.data.dataset!r} to NUM_CLASSES"
  num_classes = NUM_CLASSES[c.data.dataset]

  model = train.build_model(c, num_classes)
  is_video = c.data.dataset in VIDEO_DATASETS
  assert isinstance(model, models.VideoTransformer) == is_video
  if is_video:
    assert model.variant == (c.model.variant or model.variant)  # None: the file's
  dummy = jax.ShapeDtypeStruct((1, *input_shape(c)), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), dummy)
  params = variables["params"]
  count = num_params(params)
  assert count > 0
  head = params["output_projection" if is_video else "head"]
  assert head["bias"].shape == (num_classes,)

  if c.model_name == "ViT-B_16" and not c.model.representation_size:
    # The published count, with the position embedding of the 384 px grid (24x24 + cls
    # instead of 14x14 + cls) and a head for this dataset's classes.
    tokens = (c.data.image_size // 16) ** 2 + 1
    assert count == (VIT_B16_PARAMS_224_1K + (tokens - 197) * VIT_B16_WIDTH
                     + (num_classes - 1000) * (VIT_B16_WIDTH + 1))

  tx = optim.create_optimizer(c, params)
  opt_state = jax.eval_shape(tx.init, params)
  # Per trained parameter: a momentum (SGD) or first and second moments (AdamW); scalars
  # besides. Frozen parameters (c.freeze: a linear probe's backbone) have no state.
  moments = {"sgd": 1 if c.optimizer.momentum else 0, "adamw": 2}[c.optimizer.name]
  if c.freeze:
    frozen = jax.tree.leaves(optim.frozen_mask(params, tuple(c.freeze)))
    count = sum(x.size for x, f in zip(jax.tree.leaves(params), frozen, strict=True) if not f)
    assert count == head["kernel"].size + head["bias"].size  # the probe trains the head alone
  assert sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim) == moments * count


@pytest.mark.parametrize("name,bad", [("vit_b16_finetune", "cifar11"),
                                      ("vivit_paper", "k400,M"),
                                      ("vivit_moving_digits", "spatio_temporal,vit_mnist")])
def test_unknown_config_argument_names_the_choices(name, bad):
  # The --config flag reports get_config's ValueError, which names the valid arguments.
  with pytest.raises(flags.IllegalFlagValueError, match=re.escape(repr(bad)) + r".*[:;] use "):
    load_config(_spec(name, bad))


@pytest.mark.parametrize("arg", ["k400,B", "k400,L", "k600", "ssv2", "epic,B"])
def test_paper_configs_validate_and_build(arg):
  c = load_config(f"configs/vivit_paper.py:{arg}")
  config_lib.validate(c)
  data.validate(c.data)
  model = train.build_model(c, num_classes=400)
  assert (model.variant, c.data.num_frames, c.batch_size) == ("factorised_encoder", 32, 64)
  assert c.data.num_test_clips * c.data.num_test_crops == 12  # 4 clips x 3 crops
  epochs = {"k400": 30, "k600": 30, "ssv2": 35, "epic": 50}[arg.split(",")[0]]
  assert c.lr.warmup_steps == int(2.5 * c.total_steps / epochs)  # 2.5 epochs of warmup


@pytest.mark.parametrize("arg", ["spatio_temporal", "frame_average,vit_digits"])
def test_moving_digits_configs_validate(arg):
  c = load_config(f"configs/vivit_moving_digits.py:{arg}")
  config_lib.validate(c)
  assert train.build_model(c, num_classes=20).variant == arg.split(",")[0]


def test_the_paper_configs_smoke_run_command_validates():
  # configs/vivit_paper.py's docstring gives a one-step run; its overrides must validate
  # (a run shorter than the warmup is refused).
  doc = open(os.path.join(CONFIGS, "vivit_paper.py")).read().replace("\n", " ")
  command = re.search(r"`(--config\.total_steps=1[^`]*)`", doc).group(1)
  overrides = dict(a.removeprefix("--config.").split("=") for a in command.split())
  c = load_config(_spec("vivit_paper", "k400"))
  c.update_from_flattened_dict({k: int(v) for k, v in overrides.items()})
  config_lib.validate(c)
