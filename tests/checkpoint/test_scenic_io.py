"""Scenic ViViT checkpoints: flax msgpack train states, detected and read like any format.

The files are generated here with the key names and shapes of Scenic's
`projects/vivit/model.py` (SpaceTimeViViT for the factorised encoder: `embedding`
3-D conv, `cls_SpatialTransformer`, `SpatialTransformer/{posembed_input,
encoderblock_i, encoder_norm}`, the same for `TemporalTransformer`,
`output_projection`), wrapped in the train states Scenic's trainers save. The
logits of our model on the loaded params are checked against a numpy forward pass
that reads the file by Scenic's names, so a misplaced value changes the output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization, traverse_util

from tests.checkpoint import _ckpt_helpers as H
from vit_jax import checkpoint
from vit_jax.checkpoint import CheckpointError
from vit_jax.models import create_model

# ViViT-Mu factorised encoder: width 32, 2 spatial layers, 1 temporal layer, 2 heads, 5
# classes, 4x4 patches x 2-frame tubelets on 4-frame 8x8 videos: t=2 of a 2x2 grid.
WIDTH, MLP, HEADS, SPATIAL_LAYERS, TEMPORAL_LAYERS, CLASSES = 32, 64, 2, 2, 1, 5
PATCH, TUBELET, FRAMES, SIDE = 4, 2, 4, 8
T, N = FRAMES // TUBELET, (SIDE // PATCH) ** 2


def scenic_fe_params(seed=0):
  """Flat params of Scenic's SpaceTimeViViT (factorized_encoder, classifier 'token')."""
  fill = H.Filler(seed)
  flat = {"embedding/kernel": fill(TUBELET, PATCH, PATCH, 3, WIDTH,
                                   scale=(TUBELET * PATCH * PATCH * 3) ** -0.5),
          "embedding/bias": fill(WIDTH),
          "output_projection/kernel": fill(WIDTH, CLASSES),
          "output_projection/bias": fill(CLASSES)}
  for name, layers, tokens in (("SpatialTransformer", SPATIAL_LAYERS, N + 1),
                               ("TemporalTransformer", TEMPORAL_LAYERS, T + 1)):
    flat[f"cls_{name}"] = fill(1, 1, WIDTH, scale=0.5)
    flat[f"{name}/posembed_input/pos_embedding"] = fill(1, tokens, WIDTH, scale=0.5)
    flat[f"{name}/encoder_norm/scale"] = fill(WIDTH, around=1.0)
    flat[f"{name}/encoder_norm/bias"] = fill(WIDTH)
    for i in range(layers):
      for k, v in H._flax_block(fill, WIDTH, MLP, HEADS, H.LINEN_BLOCK).items():
        flat[f"{name}/encoderblock_{i}/{k}"] = v
  return flat


def scenic_fe_forward(flat, video):
  """Scenic's factorised encoder in numpy: [B, T, H, W, 3] -> logits [B, classes]."""
  b = video.shape[0]
  x = video.astype(np.float64).reshape(b, T, TUBELET, SIDE // PATCH, PATCH, SIDE // PATCH,
                                       PATCH, 3)
  # 3-D conv with stride = kernel: [B, t, gh, gw, D], patches row-major in each frame.
  tokens = np.einsum("btuiyjxc,uyxcd->btijd", x, flat["embedding/kernel"])
  tokens = (tokens + flat["embedding/bias"]).reshape(b * T, N, WIDTH)

  def encoder(name, tokens, layers):
    cls = np.broadcast_to(flat[f"cls_{name}"], (tokens.shape[0], 1, WIDTH))
    x = np.concatenate([cls, tokens], axis=1) + flat[f"{name}/posembed_input/pos_embedding"]
    for i in range(layers):
      p = H._sub(flat, f"{name}/encoderblock_{i}")
      y = H.layer_norm(x, p["LayerNorm_0/scale"], p["LayerNorm_0/bias"])
      x = x + H._flax_attention(y, y, H._sub(p, "MultiHeadDotProductAttention_0"))
      y = H.layer_norm(x, p["LayerNorm_1/scale"], p["LayerNorm_1/bias"])
      x = x + H._flax_mlp(y, H._sub(p, "MlpBlock_0"), approximate=True)
    x = H.layer_norm(x, flat[f"{name}/encoder_norm/scale"], flat[f"{name}/encoder_norm/bias"])
    return x[:, 0]

  frames = encoder("SpatialTransformer", tokens, SPATIAL_LAYERS).reshape(b, T, WIDTH)
  rep = encoder("TemporalTransformer", frames, TEMPORAL_LAYERS)
  return rep @ flat["output_projection/kernel"] + flat["output_projection/bias"]


def write_scenic_checkpoint(path, flat, era="flax.optim"):
  """A Scenic train state as `flax.training.checkpoints.save_checkpoint` writes it."""
  params = traverse_util.unflatten_dict(flat, sep="/")
  momentum = {k: np.zeros_like(v) for k, v in flat.items()}
  if era == "flax.optim":
    state = {"global_step": 100, "accum_train_time": 12.5, "model_state": {},
             "rng": np.zeros(2, np.uint32),
             "optimizer": {"target": params, "state": {
                 "step": 100, "param_states": traverse_util.unflatten_dict(
                     {k: {"momentum": v} for k, v in momentum.items()}, sep="/")}}}
  else:
    state = {"global_step": 100, "params": params, "model_state": {},
             "opt_state": {"0": {"trace": traverse_util.unflatten_dict(momentum, sep="/")}},
             "rng": np.zeros(2, np.uint32), "metadata": {"chrono": {}}}
  path.write_bytes(serialization.msgpack_serialize(state))
  return path


def model():
  return create_model("ViViT-Mu_4x2", num_classes=CLASSES, variant="factorised_encoder",
                      temporal_encoder_layers=TEMPORAL_LAYERS)


def videos(batch=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, FRAMES, SIDE, SIDE, 3)).astype(
      np.float32)


@pytest.mark.parametrize("era", ["flax.optim", "optax"])
def test_scenic_file_is_detected_and_gives_scenic_logits(tmp_path, era):
  flat = scenic_fe_params()
  path = write_scenic_checkpoint(tmp_path / "checkpoint_100", flat, era)
  assert checkpoint.container(str(path)) == "scenic"
  restored, fmt = checkpoint.load_with_format(str(path), allow_video=True)
  assert fmt == "scenic"
  # Every parameter of the model comes from the file, nothing else is in it.
  m, x = model(), videos()
  init = m.init(jax.random.key(0), jnp.asarray(x))["params"]
  params, report = checkpoint.adapt_video(restored, init, variant="factorised_encoder",
                                          strict=True)
  assert report.copied and not report.reinitialised and not report.ignored
  assert len(report.copied) == len(flat)
  logits = np.asarray(m.apply({"params": params}, jnp.asarray(x)))
  np.testing.assert_allclose(logits, scenic_fe_forward(flat, x), rtol=2e-4, atol=2e-4)


def test_scenic_directory_reads_the_latest_step(tmp_path):
  write_scenic_checkpoint(tmp_path / "checkpoint_50", scenic_fe_params(seed=1))
  write_scenic_checkpoint(tmp_path / "checkpoint_100", scenic_fe_params(seed=2))
  assert checkpoint.container(str(tmp_path)) == "scenic"
  restored = checkpoint.load(str(tmp_path), allow_video=True)
  np.testing.assert_array_equal(restored["output_projection"]["bias"],
                                scenic_fe_params(seed=2)["output_projection/bias"])


def test_scenic_video_file_for_an_image_model_and_bad_files_are_clear_errors(tmp_path):
  path = write_scenic_checkpoint(tmp_path / "checkpoint_1", scenic_fe_params())
  # Without allow_video (what an image model's driver asks for) a ViViT is refused.
  with pytest.raises(CheckpointError, match=r"not a ViT checkpoint.*SpatialTransformer"):
    checkpoint.load(str(path))
  other = tmp_path / "other_state"
  other.write_bytes(serialization.msgpack_serialize({"step": 1, "weights": {"w": np.ones(2)}}))
  with pytest.raises(CheckpointError, match=r"without model params: expected a Scenic train "
                                            r"state with `optimizer/target` or `params`"):
    checkpoint.load(str(other), allow_video=True)
  truncated = tmp_path / "truncated"
  truncated.write_bytes(path.read_bytes()[:200])
  with pytest.raises(CheckpointError, match=r"cannot read it as a flax msgpack checkpoint"):
    checkpoint.load(str(truncated), allow_video=True)


def test_video_checkpoint_with_other_frames_is_refused_with_the_fix(tmp_path):
  path = write_scenic_checkpoint(tmp_path / "checkpoint_1", scenic_fe_params())
  restored = checkpoint.load(str(path), allow_video=True)
  m = create_model("ViViT-Mu_4x2", num_classes=CLASSES, variant="factorised_encoder",
                   temporal_encoder_layers=TEMPORAL_LAYERS)
  # 8 frames: 4 temporal indices, the file's temporal posemb has 2 (+ cls).
  init = m.init(jax.random.key(0), jnp.zeros((1, 8, SIDE, SIDE, 3)))["params"]
  with pytest.raises(CheckpointError, match=r"TemporalTransformer/posembed_input/pos_embedding:"
                                            r" the video checkpoint has 3 position embeddings, "
                                            r"the model needs 5.*num_frames"):
    checkpoint.adapt_video(restored, init, variant="factorised_encoder")
