"""A checkpoint's expected input, from the files that say it (vit_jax/checkpoint/preprocessing.py)."""

import pytest

from vit_jax.checkpoint import preprocessing as P
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.data import config as data_config


def test_timm_pretrained_cfg():
  # As timm's save_for_hf writes config.json for vit_small_patch14_dinov2.lvd142m.
  config = {"architecture": "vit_small_patch14_dinov2", "pretrained_cfg": {
      "input_size": [3, 518, 518], "interpolation": "bicubic", "crop_pct": 1.0,
      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
  pre = P.from_timm_config(config)
  assert pre == P.Preprocessing(P.IMAGENET_MEAN, P.IMAGENET_STD, (518, 518), "bicubic", 1.0,
                                "config.json (pretrained_cfg)")
  assert pre.data_overrides() == {"image_size": (518, 518), "value_range": None,
                                  "mean": P.IMAGENET_MEAN, "std": P.IMAGENET_STD,
                                  "resize_small": None, "resize_method": "bicubic"}
  assert P.from_timm_config({"architecture": "x"}) is None


def test_hf_preprocessor_config():
  # CLIP's processor: resize the shorter side to 224, centre-crop 224, bicubic (PIL 3).
  clip = {"do_center_crop": True, "crop_size": {"height": 224, "width": 224},
          "size": {"shortest_edge": 224}, "resample": 3, "image_mean": list(P.OPENAI_CLIP_MEAN),
          "image_std": list(P.OPENAI_CLIP_STD)}
  pre = P.from_hf_preprocessor(clip)
  assert (pre.input_size, pre.interpolation, pre.crop_pct) == ((224, 224), "bicubic", 1.0)
  # SigLIP's: a plain resize to 224 x 224, pixels to [-1, 1].
  siglip = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
            "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
  over = P.from_hf_preprocessor(siglip).data_overrides()
  assert over == {"image_size": (224, 224), "value_range": (-1.0, 1.0), "mean": None,
                  "std": None, "resize_small": None, "resize_method": "bilinear"}
  # DINOv2's: shorter side 256, centre crop 224 -> crop_pct 0.875 -> resize_small 256.
  dino = {"do_center_crop": True, "crop_size": {"height": 224, "width": 224},
          "size": {"shortest_edge": 256}, "resample": 3}
  assert P.from_hf_preprocessor(dino).data_overrides()["resize_small"] == 256
  with pytest.raises(CheckpointError, match=r"cannot tell the input size"):
    P.from_hf_preprocessor({"size": {}})


def test_overrides_are_a_valid_data_config():
  for family in P.family_names():
    c = data_config.default_config()
    c.update(P.family_default(family, (224, 224)).data_overrides())
    data_config.validate(c)
  assert P.family_default("deit", (224, 224)).data_overrides()["resize_small"] == 249
  # Trained at another size, the crop fraction (0.9) is kept.
  assert P.family_default("deit", (224, 224)).data_overrides((112, 112))["resize_small"] == 124
  with pytest.raises(CheckpointError, match=r"no default preprocessing for family 'resnet'"):
    P.family_default("resnet", (224, 224))
  with pytest.raises(CheckpointError, match=r"mean=\[0.5, 0.5\], expected 3"):
    P.from_timm_config({"pretrained_cfg": {"input_size": [3, 8, 8], "mean": [0.5, 0.5]}})
