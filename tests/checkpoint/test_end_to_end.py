"""A released-format checkpoint end to end: it loads, fine-tunes at another resolution and
class count, and the result exports to files other codebases load."""

import _ckpt_helpers as H
import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors.numpy

from vit_jax import checkpoint, models


def test_released_checkpoint_finetunes_and_exports(tmp_path):
  # Pre-trained: Mu/4 at 16 px (4x4 grid), 10 classes, representation layer, released layout.
  arrays = H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=10, representation=32)
  np.savez(tmp_path / "pretrained.npz", **{"opt/target/" + k: v for k, v in arrays.items()})

  # Fine-tune at 24 px (6x6 grid) on 3 classes, erf GELU so timm's forward matches.
  model = models.create_model("ViT-Mu_4", num_classes=3, gelu_approximate=False)
  images = H.images(batch=8, height=24, width=24, seed=1)
  labels = np.arange(8) % 3
  init = model.init(jax.random.key(0), jnp.asarray(images))["params"]
  params, report = checkpoint.adapt(checkpoint.load(str(tmp_path / "pretrained.npz")), init,
                                    strict=True, log=False)
  assert report.reshaped == ["Transformer/posembed_input/pos_embedding"]

  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({"params": p}, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(5):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  logits = np.asarray(model.apply({"params": params}, images))

  # Export and run the files under their own codebases' conventions.
  checkpoint.save_npz(params, str(tmp_path / "finetuned.npz"))
  checkpoint.save_safetensors_timm(params, str(tmp_path / "finetuned.safetensors"))
  with np.load(tmp_path / "finetuned.npz") as data:
    released = dict(data)
  np.testing.assert_allclose(
      H.jax_style_forward(released, images, depth=2, block_names=H.RELEASED_BLOCK,
                          approximate=False), logits, atol=1e-4)
  sd = safetensors.numpy.load_file(str(tmp_path / "finetuned.safetensors"))
  np.testing.assert_allclose(H.timm_forward(sd, images, depth=2, heads=2), logits, atol=1e-4)
