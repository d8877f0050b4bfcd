"""Every evaluation config in configs/evals/ loads and validates, and says how to run it.

The smoke variants run through `cli.evaluate` with a `random:` source as
tests/evals/test_eval_driver.py runs it.
"""

import os

import pytest

from tests.helpers import CONFIGS, load_config
from vit_jax.evals import registry

EVAL_CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(CONFIGS, "evals"))
                      if f.endswith(".py"))
# The published protocols: (config, a number its docstring quotes with its source).
PUBLISHED = {"dinov2_s14_imagenet": ("79.0%", "81.1%", "facebookresearch/dinov2"),
             "vjepa2_vitl_ssv2": ("73.7%", "facebookresearch/vjepa2"),
             "videoprism_b_k400": ("82.9%", "google-deepmind/videoprism"),
             "siglip_so400m_fewshot": ("big_vision/evaluators/fewshot_lsr.py",)}


@pytest.mark.parametrize("name", EVAL_CONFIGS)
def test_eval_config_loads_validates_and_documents_its_command(name):
  path = f"configs/evals/{name}.py"
  with open(os.path.join(CONFIGS, "evals", f"{name}.py")) as f:
    doc = f.read().split('"""')[1]
  assert f"python -m vit_jax.evaluate --config {path}" in doc
  args = ["", "smoke"] if name in PUBLISHED else [""]
  for arg in args:
    c = load_config(path + (f":{arg}" if arg else ""))
    options = registry.validate_standalone(c)
    assert options
    if arg == "smoke":  # runs here: a random stand-in on bundled data
      assert f"{path}:smoke" in doc
      assert c.source.startswith("random:") and c.data.dataset.split("/")[0] in (
          "digits", "moving_digits")
  for quoted in PUBLISHED.get(name, ()):
    assert quoted in doc


def test_vjepa2_config_reads_the_released_encoder_and_probe():
  path = "configs/evals/vjepa2_vitl_ssv2.py"
  c = load_config(path)
  assert c.source == "hf-hub:facebook/vjepa2-vitl-fpc64-256"  # the probe reads its tokens
  released = load_config(path + ":released")
  assert released.source == "hf-hub:facebook/vjepa2-vitl-fpc16-256-ssv2"
  # The released probe is evaluated with its own pooler and head, on the same clips.
  assert [o["type"] for o in registry.validate_standalone(released).values()] == [
      "classification"]
  assert released.data.to_dict() == c.data.to_dict()
  # The real run trains the probe on the fly: SSv2's cached tokens would be terabytes.
  probe = registry.validate_standalone(c)["probe"]
  assert probe["mode"] == "on_the_fly" and probe["steps"] == 20 * 660  # 20 epochs of 168,913


def test_videoprism_config_is_videoglues_frozen_k400_protocol_on_the_fly():
  c = load_config("configs/evals/videoprism_b_k400.py")
  assert c.source == "hf-hub:google/videoprism-base-f16r288"
  probe = registry.validate_standalone(c)["probe"]
  assert {k: probe[k] for k in ("mode", "steps", "warmup_steps", "batch_size_probe",
                                "learning_rate", "weight_decay", "num_heads", "depth",
                                "num_queries", "dropout_rate", "label_smoothing")} == dict(
      mode="on_the_fly", steps=138_101, warmup_steps=4_600, batch_size_probe=256,
      learning_rate=1e-4, weight_decay=1e-5, num_heads=12, depth=0, num_queries=1,
      dropout_rate=0.5, label_smoothing=0.1)
  d = c.data
  assert (d.num_frames, d.stride, d.image_size, d.num_test_clips, d.num_test_crops) == (
      16, 4, 288, 4, 3)
