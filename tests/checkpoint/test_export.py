"""Writers: save_npz (released vit_jax layout) and save_safetensors_timm."""

import os
import zipfile

import _ckpt_helpers as H
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint, models
from vit_jax.checkpoint import tree as tree_lib


def npz_key_shapes(path):
  """{key: shape} of an .npz from the .npy headers, without reading the data."""
  shapes = {}
  with zipfile.ZipFile(path) as archive:
    for name in archive.namelist():
      with archive.open(name) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shapes[name.removesuffix(".npy")] = read_header(f)[0]
  return shapes


def distinct_values(shapes):
  """Cheap float32 values, different in every leaf and every position."""
  flat = tree_lib.flatten(shapes)
  return tree_lib.unflatten({
      key: (np.arange(s.size, dtype=np.float32) * np.float32(0.618034) + np.float32(i))
      .reshape(s.shape) for i, (key, s) in enumerate(flat.items())})


# The released .npz layout is the image ViT's; ViViT checkpoints stay in Orbax / Scenic form.
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in models.list_models() if n.startswith("ViT-")])
def test_save_npz_then_load_is_bit_identical_for_every_size(tmp_path, name):
  image = 224 if "Mu" not in name and "Nano" not in name else 32
  model = models.create_model(name, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image, image, 3))))
  params = distinct_values(shapes["params"])
  path = tmp_path / f"{name}.npz"
  try:
    checkpoint.save_npz(params, str(path))
    if name == "ViT-B_16":  # the file has exactly the released keys and shapes
      spec = H.released_npz_arrays(width=768, depth=12, mlp=3072, heads=12, patch=16,
                                   grid=(14, 14), classes=1000, fill=H.ShapeOnly())
      assert npz_key_shapes(path) == spec
    restored, fmt = checkpoint.load_with_format(str(path))
    assert fmt == "vit_jax"
    flat, flat_restored = tree_lib.flatten(params), tree_lib.flatten(restored)
    assert flat_restored.keys() == flat.keys()
    for key in flat:
      assert flat_restored[key].dtype == flat[key].dtype, key
      assert np.array_equal(flat_restored[key], flat[key]), key
  finally:
    path.unlink(missing_ok=True)  # up to 2.5 GB (ViT-H): do not leave it in pytest's tmp


def mu_params(**overrides):
  model = models.create_model("ViT-Mu_4", num_classes=5, **overrides)
  x = H.images()
  params = model.init(jax.random.key(0), jnp.asarray(x))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda v: np.asarray(v) + 0.1 * rng.standard_normal(v.shape)
                        .astype(np.float32), params)
  return model, params, x


@pytest.mark.parametrize("scan_layers", [False, True])
def test_saved_npz_runs_under_the_released_conventions(tmp_path, scan_layers):
  """What timm/vit_jax loaders read: the released forward on the raw file == our model."""
  model, params, x = mu_params(representation_size=24, scan_layers=scan_layers)
  path = str(tmp_path / "finetuned.npz")
  checkpoint.save_npz(params, path)
  with np.load(path) as data:
    raw = dict(data)
  assert "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel" in raw
  expected = H.jax_style_forward(raw, x, depth=2, block_names=H.RELEASED_BLOCK)
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, atol=1e-4)


@pytest.mark.parametrize("classifier", ["token", "map"])
def test_saved_timm_safetensors_runs_under_timm_conventions(tmp_path, classifier):
  model, params, x = mu_params(classifier=classifier, gelu_approximate=False)
  path = str(tmp_path / "finetuned.safetensors")
  checkpoint.save_safetensors_timm(params, path)
  sd = safetensors.numpy.load_file(path)
  assert sd["blocks.0.attn.qkv.weight"].shape == (96, 32)
  assert sd["patch_embed.proj.weight"].shape == (32, 3, 4, 4)
  expected = H.timm_forward(sd, x, depth=2, heads=2, pool="token" if classifier == "token"
                            else "map")
  np.testing.assert_allclose(model.apply({"params": params}, x), expected, atol=1e-4)
  # And back through our own reader, bit-identical.
  restored = tree_lib.flatten(checkpoint.load(path))
  for key, value in tree_lib.flatten(params).items():
    assert np.array_equal(restored[key], value), key


def test_bfloat16_params_are_saved_as_float32(tmp_path):
  _, params, _ = mu_params()
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.bfloat16), params)
  checkpoint.save_npz(params, str(tmp_path / "bf16.npz"))
  restored = checkpoint.load(str(tmp_path / "bf16.npz"))
  kernel = restored["embedding"]["kernel"]
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(kernel, np.asarray(params["embedding"]["kernel"], np.float32))


def test_save_is_atomic(tmp_path, monkeypatch):
  _, params, _ = mu_params()
  path = tmp_path / "model.npz"
  checkpoint.save_npz(params, str(path))
  assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
  before = path.read_bytes()

  def crash_midway(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", crash_midway)
  with pytest.raises(OSError, match="disk full"):
    checkpoint.save_npz(params, str(path))
  assert path.read_bytes() == before  # the old file is intact
  assert os.listdir(tmp_path) == ["model.npz"]  # and no temporary file is left
