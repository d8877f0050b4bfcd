"""data.resolution_mode="native" in the driver: packed training, refusals, from_checkpoint.

A tiny run on digits (random resized crops: every aspect ratio, token dropping) must
learn and count every evaluation image once, and a run must fine-tune from it with
model_name="from_checkpoint"; a run in 2 processes joined by jax.distributed, with
RandAugment and a kNN probe, must learn with each process packing its own share. The
exactness of packed evaluation and features on 1 and 8 devices: tests/data/test_native.py.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from typing import Any

import numpy as np
import pytest

from tests.driver.test_multihost import launch
from tests.helpers import TINY_DIGITS_CONFIG, logged, overrides_as_flags, read_jsonl, tiny_config
from tests.tiny_digits_config import NATIVE
from vit_jax.data import pipeline
from vit_jax.driver import config as config_lib
from vit_jax.driver import train
from vit_jax.errors import ConfigError
from vit_jax.evals import registry as evals_registry


def test_models_that_cannot_pack_and_bad_combinations_are_refused(tmp_path, digits_data_dir):
  # A fixed sincos table has no per-image resize (cls tokens and RoPE do pack: test_packed).
  c = tiny_config(digits_data_dir, **{**NATIVE, "model.posemb": "sincos2d"})
  with pytest.raises(ConfigError, match="cannot take packed batches: .*sincos2d"):
    train.Setup(c, str(tmp_path / "w"))
  with pytest.raises(ConfigError, match="mixup/cutmix"):
    config_lib.validate(tiny_config(digits_data_dir, **NATIVE, **{"mixup.mixup_alpha": 0.2}))
  assert not os.path.exists(tmp_path / "w")


def test_evaluators_that_need_more_than_pooled_features_are_refused(digits_data_dir):
  c = tiny_config(digits_data_dir, **NATIVE)
  c.evals.knn = dict(type="knn")  # pooled: fine
  c.evals.probe = dict(type="attentive")
  c.evals.lin = dict(type="linear", features=("pooled", "cls"))
  with pytest.raises(ConfigError, match=r"evals.lin.features='cls', evals.probe \(attentive: "
                     r"patch tokens\): packed native-resolution batches give one 'pooled' "
                     r"feature per image"):
    config_lib.validate(c)
  del c.evals.probe
  c.evals.lin.data = dict(resolution_mode="square")  # square images: any feature
  config_lib.validate(c)
  # The standalone evaluator (python -m vit_jax.evaluate) refuses the same.
  standalone = evals_registry.standalone_config()
  standalone.data.resolution_mode = "native"
  standalone.evals.knn = dict(type="knn", features="cls")
  with pytest.raises(ConfigError, match=r"evals.knn.features='cls': packed native"):
    evals_registry.validate_standalone(standalone)


@pytest.fixture(scope="module")
def varied_digits(tmp_path_factory) -> str:
  """folder:root/{train,test}/<digit>/*.png: the bundled digits, each stretched to a random
  height and width in 8..24 px (aspect ratios 1:3 to 3:1)."""
  from PIL import Image  # noqa: PLC0415

  from vit_jax.data.builders.digits import load_digits_split  # noqa: PLC0415

  root = tmp_path_factory.mktemp("varied_digits")
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    images, labels = load_digits_split(split)
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = root / split / str(label)
      folder.mkdir(parents=True, exist_ok=True)
      h, w = rng.integers(8, 25, size=2)
      Image.fromarray(image).resize((int(w), int(h)), Image.BILINEAR).save(
          folder / f"{i:04d}.png")
  return str(root)


@pytest.mark.slow
def test_native_run_learns_and_fine_tunes_from_its_checkpoint(tmp_path, varied_digits):
  # Digits of every aspect ratio at a budget of 16 2x2 patches (grids 2x8 to 8x2), a
  # quarter of each image's patches dropped in training.
  c = tiny_config(tmp_path, **NATIVE, **{
      "data.dataset": f"folder:{varied_digits}", "data.token_drop_rate": 0.25,
      "total_steps": 64, "eval_every_steps": 64, "checkpoint.every_steps": 64,
      "log_every_steps": 4})
  results = train.train_and_evaluate(c, str(tmp_path / "native"))
  losses = logged(tmp_path / "native" / "metrics.jsonl", "loss")
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
  assert results["num_examples"] == 360 and results["top1"] > 0.2, results  # chance: 0.1
  ft = tiny_config(tmp_path, **NATIVE, **{
      "data.dataset": f"folder:{varied_digits}",
      "model_name": config_lib.FROM_CHECKPOINT, "init_from.path": str(tmp_path / "native"),
      "init_from.reset_head": False, "total_steps": 4, "eval_every_steps": 4,
      "checkpoint.every_steps": 4, "lr.warmup_steps": 1, "lr.base": 1e-4})
  tuned = train.train_and_evaluate(ft, str(tmp_path / "ft"))
  assert tuned["num_examples"] == 360
  assert tuned["top1"] > 0.2, tuned  # it started from the run, not from scratch


# Loaded by both processes through PYTHONPATH: every batch a process packs is logged to
# LOGS/p<process>.jsonl (its valid images and labels; in training the examples' seeds),
# observing the real pipeline without changing it.
LOG_PACKED_IMAGES = textwrap.dedent("""
    import json, os
    from vit_jax.data import native
    _pack = native.Packer.__call__

    def logged_pack(self, batch):
      valid = batch["mask"] if "mask" in batch else [True] * len(batch["label"])
      record = {"train": self.train,
                "labels": [int(y) for y, v in zip(batch["label"], valid) if v]}
      if self.train:
        record["seeds"] = batch["seed"].tolist()
      else:
        record["images"] = [batch["image"][i, :h, :w].round(4).tolist()
                            for i, (h, w) in enumerate(batch["size"]) if valid[i]]
      path = os.path.join(LOGS, f"p{os.environ['VIT_JAX_PROCESS_ID']}.jsonl")
      with open(path, "a") as f:
        f.write(json.dumps(record) + "\\n")
      return _pack(self, batch)

    native.Packer.__call__ = logged_pack
""")


def _share(c, split: str, process: int, images: bool = True) -> list[tuple[int, Any]]:
  """(label, evaluation image or None) of each example of `process`'s share of 2, in order."""
  from vit_jax.data import native, sources  # noqa: PLC0415

  source = sources.open_source(c)
  ds = source.read(split, process, 2)
  if not images:
    return [(int(ex["label"]), None) for ex in ds.as_numpy_iterator()]

  def prepare(ex):
    return ex["label"], native.eval_image(source.load(ex, skip_bad=False)["raw"], c)

  return [(int(y), x) for y, x in ds.map(prepare, num_parallel_calls=2).as_numpy_iterator()]


@pytest.mark.slow
def test_two_processes_train_augmented_and_evaluate_each_on_its_own_share(tmp_path,
                                                                         varied_digits):
  # 2 processes x 2 devices (launch: parameters FSDP-split over all 4, data.train_shards=2),
  # digits of every aspect ratio, each resized whole to the budget, with DeiT's
  # RandAugment per image (relative translations: big_vision's 100 px would empty an 8x8
  # digit); evaluation batches of 64 leave padding slots and rows on both processes. The
  # run's classification and a kNN probe (tests/tiny_digits_config.py:native) evaluate.
  overrides = {"data.dataset": f"folder:{varied_digits}", "lr.base": 1e-2,
               "data.augment": "timm_randaug('rand-m5-mstd0.5-inc1')", "total_steps": 48,
               "eval_every_steps": 48, "checkpoint.every_steps": 48}
  hook, logs, workdir = tmp_path / "hook", tmp_path / "packed", tmp_path / "run"
  hook.mkdir()
  logs.mkdir()
  (hook / "sitecustomize.py").write_text(LOG_PACKED_IMAGES.replace("LOGS", repr(str(logs))))
  launch(workdir, None, *overrides_as_flags(overrides), pythonpath=hook,
         config=f"{TINY_DIGITS_CONFIG}:native")

  losses = logged(workdir / "metrics.jsonl", "loss")  # every 4 steps
  assert all(math.isfinite(x) for x in losses)
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
  with open(workdir / "results.json") as f:
    results = json.load(f)
  assert results["num_examples"] == 360, results  # the size of the test split
  assert results["loss"] < 2.2 and results["knn/top1_k10"] > 0.2, results  # chance: 2.30, 0.1

  c = tiny_config(tmp_path, **NATIVE, **overrides, **{"data.patch_size": 2}).data
  for p in (0, 1):
    records = read_jsonl(logs / f"p{p}.jsonl")
    # Training: this process read its own shard's stream (each example's seed starts
    # with the stream's seed, pipeline._host_seed(seed, shard)), every step full.
    seeds = [s for r in records if r["train"] for s in r["seeds"]]
    assert len(seeds) >= 48 * 16 and {s[0] for s in seeds} == {pipeline._host_seed(0, p)}, p
    # Evaluation: the run's classification of the test split, then the kNN probe's
    # extraction of the test and train splits (sorted): each time this process's share,
    # every image once, in order (the train split's 719 by their labels alone).
    evaluated = [(y, x) for r in records if not r["train"]
                 for y, x in zip(r["labels"], r["images"])]
    test = _share(c, "test", p)
    expected = test + test + _share(c, "train", p, images=False)
    assert len(test) == 180 and len(evaluated) == len(expected), (p, len(evaluated))
    for (y, x), (label, image) in zip(evaluated, expected):
      assert y == label, p
      if image is not None:
        np.testing.assert_allclose(np.asarray(x, np.float32), image, atol=1e-3)
