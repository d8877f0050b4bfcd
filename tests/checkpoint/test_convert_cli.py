"""`python -m vit_jax.convert` as a subprocess (one CPU device, unlike the test process)."""

import subprocess
import sys

import _ckpt_helpers as H
import jax
import numpy as np
import pytest
import safetensors.numpy
from test_orbax import init_params, save_training_run, shard_over_devices

from tests.helpers import REPO, subprocess_env
from vit_jax import checkpoint, models
from vit_jax.checkpoint import tree as tree_lib


def run_cli(*args):
  env = subprocess_env(devices=None)  # a single device: the checkpoint was written by eight
  return subprocess.run([sys.executable, "-m", "vit_jax.convert", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def assert_same_params(a, b):
  a, b = tree_lib.flatten(a), tree_lib.flatten(b)
  assert a.keys() == b.keys()
  for key in a:
    assert np.array_equal(a[key], b[key]), key


def test_orbax_run_to_npz_and_timm(tmp_path):
  params = init_params(scan_layers=True, seed=5)
  assert len(jax.devices()) == 8
  save_training_run(str(tmp_path / "run"), [(10, shard_over_devices(params))])
  expected = models.unstack_layers(jax.device_get(params))

  result = run_cli(str(tmp_path / "run"), str(tmp_path / "out.npz"))
  assert result.returncode == 0, result.stderr
  # Mu/4 at 16 px, 10 classes: conv 1,568 + cls 32 + posemb 544 + 2 blocks x 8,544 + norm 64
  # + head 330.
  assert "(orbax) ->" in result.stdout and "(npz): 19,626 parameters" in result.stdout
  assert_same_params(checkpoint.load(str(tmp_path / "out.npz")), expected)
  with np.load(tmp_path / "out.npz") as data:
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in data.files

  result = run_cli(str(tmp_path / "out.npz"), str(tmp_path / "out.safetensors"))
  assert result.returncode == 0, result.stderr
  assert "(vit_jax) ->" in result.stdout and "(safetensors-timm)" in result.stdout
  assert "blocks.1.attn.qkv.weight" in safetensors.numpy.load_file(
      str(tmp_path / "out.safetensors"))
  assert_same_params(checkpoint.load(str(tmp_path / "out.safetensors")), expected)

  result = run_cli(str(tmp_path / "out.safetensors"), str(tmp_path / "item"), "--format", "orbax")
  assert result.returncode == 0, result.stderr
  assert_same_params(checkpoint.load(str(tmp_path / "item")), expected)


def test_hf_to_npz_with_num_heads(tmp_path):
  sd = H.hf_state_dict(width=48, depth=1, mlp=96, classes=5, patch=4, grid=(4, 4))
  safetensors.numpy.save_file(sd, str(tmp_path / "hf.safetensors"))
  result = run_cli(str(tmp_path / "hf.safetensors"), str(tmp_path / "out.npz"))
  assert result.returncode == 1
  assert "error:" in result.stderr and "pass num_heads" in result.stderr
  result = run_cli(str(tmp_path / "hf.safetensors"), str(tmp_path / "out.npz"), "--num-heads", "3")
  assert result.returncode == 0, result.stderr
  with np.load(tmp_path / "out.npz") as data:
    kernel = data["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
  assert kernel.shape == (48, 3, 16)
  np.testing.assert_array_equal(kernel.reshape(48, 48),
                                sd["vit.encoder.layer.0.attention.attention.query.weight"].T)


@pytest.mark.parametrize("dst", ["out.bin"])
def test_unknown_output_extension(tmp_path, dst):
  np.savez(tmp_path / "in.npz", **H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5))
  result = run_cli(str(tmp_path / "in.npz"), str(tmp_path / dst))
  assert result.returncode != 0 and "pass --format" in result.stderr
