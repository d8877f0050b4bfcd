"""Learned position embeddings at any input size, resized in the graph as torch does it.

`tests/models/data/torch_interpolate.json` holds torch 2.13's
`F.interpolate(grid, size, mode, align_corners=False, antialias)` of a random [1, 3, 5, 7]
grid for 5 output sizes (up, down, mixed) x bilinear / bicubic x antialias off / on,
made once where torch is installed with:

  F.interpolate(torch.from_numpy(grid), size=size, mode=mode, align_corners=False,
                antialias=aa).numpy().round(7)

`positions.interpolation_matrix` must reproduce every case; a model built with
`posemb_resize` then serves any input size with one set of parameters.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model, positions

DATA = os.path.join(os.path.dirname(__file__), "data", "torch_interpolate.json")


def _cases():
  with open(DATA) as f:
    data = json.load(f)
  grid = np.asarray(data["grid"], np.float32)[0]  # [D, gh, gw]
  return grid, data["cases"]


def test_interpolation_matrices_reproduce_torch():
  grid, cases = _cases()
  assert len(cases) == 20
  for c in cases:
    rows = positions.interpolation_matrix(grid.shape[1], c["size"][0], c["mode"], c["antialias"])
    cols = positions.interpolation_matrix(grid.shape[2], c["size"][1], c["mode"], c["antialias"])
    ours = np.einsum("ph,qw,dhw->dpq", rows, cols, grid.astype(np.float64))
    np.testing.assert_allclose(ours, np.asarray(c["out"])[0], atol=5e-6,
                               err_msg=f"{c['mode']} antialias={c['antialias']} {c['size']}")


def test_resize_posemb_grid_in_the_graph_is_the_same_resize():
  grid, cases = _cases()
  tokens = jnp.asarray(grid.transpose(1, 2, 0).reshape(1, 35, 3))  # [1, gh*gw, D]
  for c in cases:
    method = c["mode"] + ("_antialias" if c["antialias"] else "")
    out = jax.jit(positions.resize_posemb_grid, static_argnums=(1, 2, 3))(
        tokens, (5, 7), tuple(c["size"]), method)
    expected = np.asarray(c["out"])[0].transpose(1, 2, 0).reshape(1, -1, 3)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_a_model_with_posemb_resize_serves_any_input_size():
  """At the size it was made for it is the plain model; at another size (non-square) it is
  the plain model of that size given the resized position embedding."""
  options = dict(posemb_resize="bilinear_antialias", num_registers=2, no_embed_class=True)
  model = create_model("ViT-Mu_4", num_classes=5, **options)
  plain = create_model("ViT-Mu_4", num_classes=5, **{k: v for k, v in options.items()
                                                     if k != "posemb_resize"})
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), images)["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)  # a non-zero head
  run, run_plain = jax.jit(model.apply), jax.jit(plain.apply)  # one program per shape
  np.testing.assert_array_equal(run({"params": params}, images),
                                run_plain({"params": params}, images))

  wide = jnp.asarray(rng.uniform(-1, 1, (2, 12, 28, 3)), jnp.float32)  # grid 3 x 7
  posemb = params["Transformer"]["posembed_input"]["pos_embedding"]
  prefix = positions.posemb_prefix_rows(model)
  resized = jnp.concatenate([posemb[:, :prefix], positions.resize_posemb_grid(
      posemb[:, prefix:], (4, 4), (3, 7), options["posemb_resize"])], axis=1)
  fixed = jax.tree.map(lambda x: x, params)
  fixed["Transformer"]["posembed_input"]["pos_embedding"] = resized
  np.testing.assert_allclose(run({"params": params}, wide),
                             run_plain({"params": fixed}, wide), atol=1e-5)


def test_without_posemb_resize_another_size_is_an_error_naming_the_fix():
  model = create_model("ViT-Mu_4", num_classes=5)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  with pytest.raises(ValueError, match="posemb_resize"):
    model.apply({"params": params}, jnp.zeros((1, 24, 16, 3)))
