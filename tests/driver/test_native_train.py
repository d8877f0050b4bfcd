"""data.resolution_mode="native" in the driver: packed training, refusals, from_checkpoint.

A tiny run on digits (random resized crops: every aspect ratio, token dropping) must
learn and count every evaluation image once, and a run must fine-tune from it with
model_name="from_checkpoint"; the same in 2 processes joined by jax.distributed, each
packing its own share. The exactness of packed evaluation on 1 and 8 devices:
tests/data/test_native.py.
"""

from __future__ import annotations

import json
import math
import os
import textwrap

import numpy as np
import pytest

from tests.driver.test_multihost import launch
from tests.helpers import logged, overrides_as_flags, read_jsonl, tiny_config
from vit_jax.driver import config as config_lib
from vit_jax.driver import train
from vit_jax.errors import ConfigError

NATIVE = {"model.classifier": "gap", "model.posemb_resize": "bilinear_antialias",
          "data.resolution_mode": "native", "data.max_num_patches": 16, "data.seq_len": 40,
          "data.max_images_per_row": 4}


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


@pytest.mark.slow
def test_native_run_with_randaugment_learns(tmp_path, digits_data_dir):
  # DeiT's RandAugment (relative translations: big_vision's 100 px ones would empty an 8x8
  # digit) on each image after the budget resize; losses logged every 4 of 48 steps.
  # A kNN probe on the packed images' pooled features evaluates beside the run's head.
  c = tiny_config(digits_data_dir, **NATIVE, **{
      "data.augment": "timm_randaug('rand-m5-mstd0.5-inc1')", "data.eval_split": "test[:64]",
      "total_steps": 48, "eval_every_steps": 0, "checkpoint.every_steps": 48})
  c.evals.knn = dict(type="knn", ks=(10,), data=dict(train_split="train[:256]"))
  results = train.train_and_evaluate(c, str(tmp_path / "augmented"))
  losses = logged(tmp_path / "augmented" / "metrics.jsonl", "loss")
  assert all(math.isfinite(x) for x in losses)
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
  assert results["loss"] < 2.2, results  # chance: ln(10) = 2.30
  assert results["knn/top1_k10"] > 0.3, results  # neighbours among 256 train digits


# Loaded by both processes through PYTHONPATH: every batch a process packs is logged to
# LOGS/p<process>.jsonl (its valid images and labels), observing the real pipeline
# without changing it.
LOG_PACKED_IMAGES = textwrap.dedent("""
    import json, os
    from vit_jax.data import native
    _pack = native.Packer.__call__

    def logged_pack(self, batch):
      valid = batch["mask"] if "mask" in batch else [True] * len(batch["label"])
      images = [batch["image"][i, :h, :w].round(4).tolist()
                for i, (h, w) in enumerate(batch["size"]) if valid[i]]
      labels = [int(y) for y, v in zip(batch["label"], valid) if v]
      path = os.path.join(LOGS, f"p{os.environ['VIT_JAX_PROCESS_ID']}.jsonl")
      with open(path, "a") as f:
        f.write(json.dumps({"train": self.train, "images": images, "labels": labels}) + "\\n")
      return _pack(self, batch)

    native.Packer.__call__ = logged_pack
""")


def _share(c, split: str, process: int, train: bool) -> list[tuple[int, np.ndarray]]:
  """(label, native image) of each example of `process`'s share of 2, in reading order."""
  from vit_jax.data import native, sources  # noqa: PLC0415

  source = sources.open_source(c)

  def prepare(ex):
    return ex["label"], native.eval_image(source.load(ex, skip_bad=False)["raw"], c)

  ds = source.read(split, process, 2, shuffle_files=train).map(prepare, num_parallel_calls=2)
  return [(int(y), x) for y, x in ds.as_numpy_iterator()]


def _found(label: int, image: np.ndarray, share: list[tuple[int, np.ndarray]]) -> bool:
  return any(y == label and x.shape == image.shape and np.allclose(x, image, atol=1e-3)
             for y, x in share)


@pytest.mark.slow
def test_two_processes_train_and_evaluate_each_on_its_own_share(tmp_path, varied_digits):
  # 2 processes x 2 devices (launch: parameters FSDP-split over all 4, data.train_shards=2),
  # images of every aspect ratio resized whole (no random crop, no flip, no token
  # dropping: a logged training image is exactly its evaluation image, so it can be found
  # in a share); evaluation batches of 64 leave padding slots and rows on both processes.
  overrides = {**NATIVE, "data.dataset": f"folder:{varied_digits}", "total_steps": 8,
               "eval_every_steps": 8, "checkpoint.every_steps": 8, "lr.warmup_steps": 2}
  hook = tmp_path / "hook"
  hook.mkdir()
  workdir, logs = tmp_path / "run", tmp_path / "packed"
  logs.mkdir()
  (hook / "sitecustomize.py").write_text(LOG_PACKED_IMAGES.replace("LOGS", repr(str(logs))))
  launch(workdir, None, *overrides_as_flags(overrides), pythonpath=hook)

  assert all(math.isfinite(x) for x in logged(workdir / "metrics.jsonl", "loss"))
  with open(workdir / "results.json") as f:
    assert json.load(f)["num_examples"] == 360  # the size of the test split

  c = tiny_config(tmp_path, **overrides, **{"data.patch_size": 2}).data
  for p in (0, 1):
    records = read_jsonl(logs / f"p{p}.jsonl")
    # Evaluation: this process's share of the test split, every image once, in order.
    evaluated = [(y, np.asarray(x, np.float32)) for r in records if not r["train"]
                 for y, x in zip(r["labels"], r["images"])]
    share = _share(c, "test", p, train=False)
    assert len(evaluated) == len(share) == 180, p
    for (y, x), (label, expected) in zip(evaluated, share):
      assert y == label and x.shape == expected.shape, p
      np.testing.assert_allclose(x, expected, atol=1e-3)
    # Training: only images of this process's share of the train split (and at least
    # the 8 steps x 16 images it trained on; the pipeline reads a few batches ahead).
    trained = [(y, np.asarray(x, np.float32)) for r in records if r["train"]
               for y, x in zip(r["labels"], r["images"])]
    assert len(trained) >= 8 * 16, p
    share = _share(c, "train", p, train=True)
    assert all(_found(y, x, share) for y, x in trained), p
