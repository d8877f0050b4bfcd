"""Bad input gets a clear error naming the file and what was expected."""

import _ckpt_helpers as H
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint
from vit_jax.checkpoint import CheckpointError


@pytest.fixture
def released_npz(tmp_path):
  path = tmp_path / "vit.npz"
  np.savez(path, **H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5))
  return path


@pytest.fixture
def timm_file(tmp_path):
  path = tmp_path / "vit.safetensors"
  safetensors.numpy.save_file(
      H.timm_state_dict(width=32, depth=2, mlp=64, classes=5, patch=4, grid=(4, 4)), str(path))
  return path


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_npz(tmp_path, released_npz, keep):
  data = released_npz.read_bytes()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(CheckpointError, match=r"truncated\.npz: cannot read it as an \.npz.*"
                                            r"truncated or corrupt"):
    checkpoint.load(str(truncated))


def test_corrupt_npz_member(tmp_path, released_npz):
  # Flip bytes inside the first array's data: the zip CRC check must catch it.
  data = bytearray(released_npz.read_bytes())
  data[200:216] = b"\xff" * 16
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match="corrupt.npz: cannot read it"):
    checkpoint.load(str(corrupt))


def test_truncated_safetensors(tmp_path, timm_file):
  truncated = tmp_path / "truncated.safetensors"
  truncated.write_bytes(timm_file.read_bytes()[:-100])
  with pytest.raises(CheckpointError, match=r"truncated\.safetensors: cannot read it as a "
                                            r"\.safetensors file"):
    checkpoint.load(str(truncated))


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(4096),
                                     b'{"not": "a checkpoint"}'])
def test_random_bytes(tmp_path, content):
  path = tmp_path / "weights.npz"
  path.write_bytes(content)
  with pytest.raises(CheckpointError, match=r"weights\.npz: not a checkpoint this project reads "
                                            r".*expected an \.npz \(zip\) archive, a "
                                            r"\.safetensors file, or an Orbax"):
    checkpoint.load(str(path))


def test_missing_file(tmp_path):
  with pytest.raises(CheckpointError, match="no such file"):
    checkpoint.load(str(tmp_path / "nope.npz"))


def test_resnet_npz_is_another_architecture(tmp_path):
  # BiT ResNet .npz keys (big_transfer): no patch embedding.
  path = tmp_path / "resnet.npz"
  np.savez(path, **{"resnet/root_block/standardized_conv2d/kernel": np.zeros((7, 7, 3, 64)),
                    "resnet/block1/unit01/a/group_norm/gamma": np.ones(64),
                    "resnet/head/conv2d/kernel": np.zeros((1, 1, 2048, 1000))})
  with pytest.raises(CheckpointError, match=r"resnet\.npz: not a ViT checkpoint: expected an "
                                            r"`embedding/kernel` patch embedding"):
    checkpoint.load(str(path))


def test_vivit_npz_is_another_architecture(tmp_path):
  arrays = H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5)
  arrays["embedding/kernel"] = np.zeros((2, 4, 4, 3, 32), np.float32)  # tubelet kernel
  path = tmp_path / "vivit.npz"
  np.savez(path, **arrays)
  with pytest.raises(CheckpointError, match=r"embedding/kernel has shape \(2, 4, 4, 3, 32\).*"
                                            r"video model"):
    checkpoint.load(str(path))


def test_timm_resnet_safetensors(tmp_path):
  path = tmp_path / "resnet50.safetensors"
  safetensors.numpy.save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
                               "bn1.weight": np.ones(64, np.float32),
                               "fc.weight": np.zeros((1000, 2048), np.float32)}, str(path))
  with pytest.raises(CheckpointError, match=r"resnet50\.safetensors: not a ViT checkpoint: "
                                            r"expected timm's `patch_embed.proj.weight`"):
    checkpoint.load(str(path))


def test_timm_vit_variant_with_unknown_tensors(tmp_path):
  sd = H.timm_state_dict(width=32, depth=2, mlp=64, classes=5, patch=4, grid=(4, 4))
  # BEiT's relative position bias: not a component of any family this project builds.
  sd["blocks.0.attn.relative_position_bias_table"] = np.zeros((10, 2), np.float32)
  sd["rel_pos_bias.weight"] = np.ones(32, np.float32)
  path = tmp_path / "beit.safetensors"
  safetensors.numpy.save_file(sd, str(path))
  with pytest.raises(CheckpointError, match=r"2 tensor\(s\) do not belong to a plain timm ViT.*"
                                            r"blocks.0.attn.relative_position_bias_table "
                                            r"\(10, 2\), rel_pos_bias.weight \(32,\)"):
    checkpoint.load(str(path))


def test_non_standard_width_needs_num_heads(tmp_path):
  sd = H.timm_state_dict(width=48, depth=1, mlp=96, classes=5, patch=4, grid=(4, 4))
  path = tmp_path / "w48.safetensors"
  safetensors.numpy.save_file(sd, str(path))
  with pytest.raises(CheckpointError, match="width 48 is not a standard ViT size.*num_heads"):
    checkpoint.load(str(path))
  params = checkpoint.load(str(path), num_heads=3)
  attn = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  assert attn["query"]["kernel"].shape == (48, 3, 16)


def test_mixed_block_naming_is_rejected(tmp_path, released_npz):
  arrays = dict(np.load(released_npz))
  arrays["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"] = np.zeros((32, 64), np.float32)
  path = tmp_path / "mixed.npz"
  np.savez(path, **arrays)
  with pytest.raises(CheckpointError, match="mixes pre-Linen"):
    checkpoint.load(str(path))
