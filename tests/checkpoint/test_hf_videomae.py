"""transformers VideoMAE folders (model_type videomae): load, compare, refuse, export.

Each folder has exactly the key names, shapes and config.json fields transformers saves
(tests/checkpoint/data/hf_video_keys.json, tiny); the output must equal an independent
numpy forward of transformers' VideoMAE (_hf_video.py) written from the same weights.
"""

import json

import _hf_video as V
import jax
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint
from vit_jax.checkpoint import hf_video

ATOL = 1e-4


def clips(frames=4, size=32, batch=2, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, frames, size, size, 3)).astype(
      np.float32)


@pytest.mark.parametrize("case", ["vmae_cls", "vmae_pt"])
def test_folder_gives_the_reference_output(tmp_path, case):
  path, sd, config = V.folder(tmp_path, case)
  pre = checkpoint.load_pretrained(str(path))
  assert pre.is_video and pre.format == "hf:videomae"
  model = pre.model
  assert (model.posemb, model.classifier_in_use, model.options.qkv_bias) == (
      "sincos1d", "gap", "qv")
  assert model.options.layernorm_epsilon == 1e-12 and not model.options.gelu_approximate
  assert "pos_embedding" not in str(jax.tree_util.tree_structure(pre.params))
  apply = jax.jit(model.apply)
  out = np.asarray(apply({"params": pre.params}, clips()))
  np.testing.assert_allclose(out, V.videomae_forward(sd, config, clips()), atol=ATOL)
  if case == "vmae_pt":
    # VideoMAEForPreTraining: the encoder; its decoder is left out and reported.
    assert out.shape == (2, 32) and model.num_classes is None
    assert set(pre.left_out) == {k for k in sd if k.startswith(("decoder.", "encoder_to_"))
                                 } | {"mask_token"}
  else:
    assert out.shape == (2, 3)
    # Another frame count and size: the sinusoidal table is recomputed (6 x 1 tubelets).
    other = clips(frames=6, size=16, batch=1)
    np.testing.assert_allclose(np.asarray(apply({"params": pre.params}, other)),
                               V.videomae_forward(sd, config, other), atol=ATOL)


def test_encoder_with_its_final_norm_pools_the_normed_tokens(tmp_path):
  """use_mean_pooling=false (the pre-training releases): VideoMAEModel has `layernorm`."""
  path, sd, config = V.folder(tmp_path, "vmae_model", config_overrides={
      "use_mean_pooling": False})
  sd["layernorm.weight"] = np.ones(32, np.float32) + 0.1
  sd["layernorm.bias"] = np.full(32, 0.05, np.float32)
  safetensors.numpy.save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
  pre = checkpoint.load_pretrained(str(path))
  assert not pre.model.options.fc_norm
  out = np.asarray(jax.jit(pre.model.apply)({"params": pre.params}, clips()))
  np.testing.assert_allclose(out, V.videomae_forward(sd, config, clips()), atol=ATOL)


@pytest.mark.parametrize("overrides, message", [
    ({"qv_bias": False}, "qv_bias=False, the weights have True"),
    ({"tubelet_size": 4}, "tubelet_size=4, the weights have 2"),
    ({"use_mean_pooling": False}, "use_mean_pooling=False, the weights have True"),
    ({"intermediate_size": 128}, "intermediate_size=128, the weights have 64"),
])
def test_config_that_disagrees_with_the_weights_names_the_field(tmp_path, overrides, message):
  path, _, _ = V.folder(tmp_path, "vmae_cls", config_overrides=overrides)
  with pytest.raises(checkpoint.CheckpointError, match=message):
    checkpoint.load_pretrained(str(path))


def test_video_processor_config_gives_the_clip_and_load_reads_the_params(tmp_path):
  path, _, _ = V.folder(tmp_path, "vmae_cls")
  processor = {"video_processor_type": "VideoMAEVideoProcessor", "do_resize": True,
               "size": {"shortest_edge": 32}, "do_center_crop": True,
               "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
               "rescale_factor": 1 / 255, "do_normalize": True,
               "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
               "resample": 2}
  (path / "video_preprocessor_config.json").write_text(json.dumps(processor))
  p = checkpoint.load_pretrained(str(path)).preprocessing
  np.testing.assert_allclose(p.mean, [0.485, 0.456, 0.406])
  assert (p.crop_pct, p.num_frames, p.frame_stride, p.interpolation) == (1.0, 4, 4, "bilinear")
  assert p.source.endswith("video_preprocessor_config.json")
  params = checkpoint.load(str(path), allow_video=True)
  assert sorted(params) == ["Transformer", "embedding", "fc_norm", "output_projection"]
  with pytest.raises(checkpoint.CheckpointError, match="3-D .tubelet. kernel belongs to a video"):
    checkpoint.load(str(path))  # an image model's caller


def test_export_round_trip_is_bit_exact(tmp_path):
  path, _, _ = V.folder(tmp_path, "vmae_cls")
  pre = checkpoint.load_pretrained(str(path))
  out = tmp_path / "exported"
  hf_video.save_hf_video(pre.params, pre.model, str(out), num_frames=4, image_size=32)
  back = checkpoint.load_pretrained(str(out))
  leaves = jax.tree_util.tree_leaves_with_path(pre.params)
  again = dict(jax.tree_util.tree_leaves_with_path(back.params))
  assert len(again) == len(leaves)
  for key, value in leaves:
    np.testing.assert_array_equal(again[key], value)
  assert back.model == pre.model
  with pytest.raises(checkpoint.CheckpointError, match="a key bias"):
    hf_video.save_hf_video(pre.params, pre.model.clone(qkv_bias="qkv"), str(tmp_path / "x"),
                           num_frames=4)


def test_predict_on_a_video_file_with_the_folders_class_names(tmp_path):
  from tests.media import write_video  # noqa: PLC0415 (PyAV only here)
  from vit_jax.tools import inference  # noqa: PLC0415

  path, sd, config = V.folder(tmp_path, "vmae_cls", config_overrides={
      "id2label": {"0": "archery", "1": "bowling", "2": "surfing water"}})
  frames = np.random.default_rng(0).integers(0, 256, (12, 36, 40, 3), dtype=np.uint8)
  write_video(str(tmp_path / "clip.mp4"), frames)
  trained = inference.load(checkpoint_path=str(path))
  files, raw = inference.read_inputs([str(tmp_path / "clip.mp4")])
  inputs = trained.preprocess(raw)  # 4 frames every 4th, shorter side 32, ImageNet mean/std
  assert inputs.shape == (1, 1, 4, 32, 32, 3)
  probs = trained.probabilities(inputs)
  expected = V.videomae_forward(sd, config, inputs[:, 0])
  np.testing.assert_allclose(np.log(probs) - np.log(probs).mean(-1, keepdims=True),
                             expected - expected.mean(-1, keepdims=True), atol=ATOL)
  best = inference.top_k(probs, trained.class_names, 3)[0]
  assert {name for name, _ in best} == {"archery", "bowling", "surfing water"}
