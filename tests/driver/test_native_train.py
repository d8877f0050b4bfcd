"""data.resolution_mode="native" in the driver: packed training, refusals, from_checkpoint.

A tiny run on digits (random resized crops: every aspect ratio, token dropping) must
learn and count every evaluation image once, and a run must fine-tune from it with
model_name="from_checkpoint". The exactness of packed evaluation on 1 and 8 devices:
tests/data/test_native.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.helpers import logged, tiny_config
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
