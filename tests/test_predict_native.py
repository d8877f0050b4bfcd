"""predict and visualize at native resolution (`--resolution native`, or a native run).

Files of different aspect ratios are each scored at their own size under the patch budget
(packed several to a batch), as the same image alone gives; visualize draws the attention
maps, on each image's own patch grid, over the file at its original shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vit_jax import checkpoint, data, models
from vit_jax.data import native
from vit_jax.errors import ConfigError
from vit_jax.models import packed
from vit_jax.tools import inference, predict, visualize

SIZES = [(30, 12), (12, 30), (20, 20), (9, 27), (16, 24)]  # (height, width) of the files


@pytest.fixture(scope="module")
def bundle():
  model = models.create_model("ViT-Mu_4", num_classes=3, classifier="gap",
                              posemb_resize="bilinear_antialias")

  @jax.jit
  def init():
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    return jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)

  eval_data = {"image_size": [16, 16], "resize_small": None, "resize_method": "bilinear",
               "value_range": (-1.0, 1.0), "mean": None, "std": None}
  return checkpoint.Pretrained(
      model, init(), checkpoint.preprocessing.from_data_config(eval_data, "test"), "linen",
      "test", class_names=("a", "b", "c"), model_name="ViT-Mu_4", eval_data=eval_data)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("aspect_pngs")
  rng = np.random.default_rng(0)
  paths = []
  for i, (h, w) in enumerate(SIZES):
    paths.append(str(root / f"{i}.png"))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
  return paths


def test_native_predict_scores_each_image_at_its_own_size(bundle, files):
  trained = inference.with_resolution(bundle, "native", 16)
  assert trained.data_config()["max_num_patches"] == 16
  got = predict.predict(trained, files, k=3, batch_size=4)  # chunks of 3 and 2 images
  config = data.config.as_config(trained.data_config())
  apply = jax.jit(lambda x: bundle.model.apply({"params": bundle.params}, x))
  for (path, best), (h, w) in zip(got, SIZES):
    image = native.eval_image(tf.constant(data.decode_file(path)), config).numpy()
    assert image.shape[:2] == native.target_size(h, w, (4, 4), 16)
    alone, _ = packed.pack_images([image], (4, 4), seq_len=16, max_images=1)
    probs = np.asarray(jax.nn.softmax(apply(alone)[0, 0]))
    np.testing.assert_allclose([p for _, p in best], np.sort(probs)[::-1], atol=1e-5)
    assert [n for n, _ in best] == [bundle.class_names[j] for j in np.argsort(-probs)]
  with pytest.raises(ConfigError, match="--resolution=wide"):
    inference.with_resolution(bundle, "wide")


def test_native_visualize_draws_on_the_original_shape(bundle, files, tmp_path, monkeypatch):
  drawn = []
  real = visualize.rollout_figure
  monkeypatch.setattr(visualize, "rollout_figure", lambda image, heat, *a, **k: (
      drawn.append((image.shape, heat.shape)), real(image, heat, *a, **k))[1])
  trained = inference.with_resolution(bundle, "native", 16)
  written = visualize.visualize(trained, files[:1], str(tmp_path), k=3)
  assert len(written) == 2 and all(p.endswith(".png") for p in written)
  (h, w), (th, tw) = SIZES[0], native.target_size(*SIZES[0], (4, 4), 16)
  assert drawn == [((h, w, 3), (th // 4, tw // 4))]  # a 30x12 file, its 5x2 patch grid
