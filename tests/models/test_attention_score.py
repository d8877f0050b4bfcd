"""Tests of the attention score family (`attention_score` on ViT and ViViT).

The default ("scaled_dot") must be unchanged by the option: `data/
default_attention_golden.npz` holds the initial parameters, the logits and the
sown attention weights of several models, computed with the code of commit
4216593 (before the option existed) by `_outputs` below. They are compared to
float32 round-off (1e-6), not bit for bit, so that another CPU's vectorisation
of the same program does not fail the test; any change in the math is far larger.
Regenerate only from that commit's code, never from the current one.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import models
from vit_jax.models import layers, options

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "default_attention_golden.npz")
NON_DEFAULT = ("dot", "bilinear", "additive", "cosine")
EXTRA_PARAM = {"bilinear": ("bilinear", (2, 16, 16)), "additive": ("additive_v", (2, 16)),
               "cosine": ("log_temperature", (2,))}


def _images(batch=2):
  return jax.random.uniform(jax.random.key(1), (batch, 8, 8, 3), minval=-1, maxval=1)


def _video(batch=2):
  return jax.random.uniform(jax.random.key(1), (batch, 4, 8, 8, 3), minval=-1, maxval=1)


def _perturbed(params):
  # Deterministic non-zero values everywhere: the zero head would hide the encoder.
  return jax.tree.map(
      lambda p: p + 0.02 * jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)), params)


def _outputs(model, x):
  """Flat {key: array} of the initial params, and of the logits and weights with perturbed params.

  One jitted program per model (as training and evaluation run it); eager op-by-op
  dispatch would make this test ten times slower.
  """
  @jax.jit
  def run(x):
    params = model.init(jax.random.key(0), x)["params"]
    perturbed = _perturbed(params)
    logits = model.apply({"params": perturbed}, x)
    return params, logits, models.attention_weights(model, perturbed, x)[1]

  params, logits, weights = run(x)
  out = {f"params|{jax.tree_util.keystr(k)}": v
         for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  out["logits"] = logits
  out.update({f"weights|{k}": v for k, v in weights.items()})
  return {k: np.asarray(v) for k, v in out.items()}


def _golden_models():
  """One model per code path of the attention: ViT (loop, scan, MAP head), ViViT's two
  factorised attentions (named modules; heads split between time and space)."""
  x, video = _images(), _video()
  return {
      "vit_token": (models.create_model("ViT-Mu_2", num_classes=5), x),
      "vit_map": (models.create_model("ViT-Mu_2", num_classes=5, classifier="map"), x),
      "vit_scan": (models.create_model("ViT-Mu_2", num_classes=5, scan_layers=True), x),
      "vivit_fsa": (models.create_model("ViViT-Mu_4x2", num_classes=5,
                                        variant="factorised_self_attention"), video),
      "vivit_fdp": (models.create_model("ViViT-Mu_4x2", num_classes=5,
                                        variant="factorised_dot_product"), video),
  }


def test_default_is_unchanged_from_before_the_option():
  golden = np.load(GOLDEN)
  for name, (model, x) in _golden_models().items():
    assert model.attention_score == "scaled_dot"
    expected = {k.split("|", 1)[1]: golden[k] for k in golden.files if k.startswith(name + "|")}
    actual = _outputs(model, x)
    assert sorted(actual) == sorted(expected), f"{name}: parameter or module names changed"
    for key, value in expected.items():
      assert actual[key].shape == value.shape, (name, key)
      np.testing.assert_allclose(actual[key], value, rtol=1e-6, atol=1e-6,
                                 err_msg=f"{name} {key}: the default attention changed")


@pytest.mark.parametrize("score", NON_DEFAULT)
def test_parameters_and_fused_path_match_explicit_path(score):
  model = models.create_model("ViT-Mu_2", num_classes=5, attention_score=score)
  params = model.init(jax.random.key(0), _images())["params"]
  attn = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  base = {"query", "key", "value", "out"}
  if score in EXTRA_PARAM:
    name, shape = EXTRA_PARAM[score]
    assert set(attn) == base | {name} and attn[name].shape == shape
  else:
    assert set(attn) == base
  # The MAP head and everything outside the attention are untouched.
  default = models.create_model("ViT-Mu_2", num_classes=5).init(
      jax.random.key(0), _images())["params"]
  assert jax.tree.structure(params["Transformer"]["encoder_norm"]) == jax.tree.structure(
      default["Transformer"]["encoder_norm"])
  params = _perturbed(params)
  # "xla" forces jax.nn.dot_product_attention (on CPUs the default is the explicit path).
  fused = model.clone(attention_implementation="xla").apply({"params": params}, _images())
  explicit, weights = models.attention_weights(model, params, _images())
  np.testing.assert_allclose(fused, explicit, atol=1e-5)
  w = weights["Transformer/encoderblock_0/MultiHeadDotProductAttention_0"]
  assert w.shape == (2, 2, 17, 17)
  np.testing.assert_allclose(jnp.sum(w, -1), 1.0, atol=1e-5)


def test_bilinear_starts_as_scaled_dot_product():
  x = _images()
  bilinear = models.create_model("ViT-Mu_2", num_classes=5, attention_score="bilinear")
  default = models.create_model("ViT-Mu_2", num_classes=5)
  params = bilinear.init(jax.random.key(0), x)["params"]
  # Perturb everything but W, which starts at I / sqrt(head_dim).
  base = _perturbed(_strip_score_params(params))
  with_w = jax.tree.map(lambda a: a, base)
  for i in range(2):
    block = f"encoderblock_{i}"
    with_w["Transformer"][block]["MultiHeadDotProductAttention_0"]["bilinear"] = (
        params["Transformer"][block]["MultiHeadDotProductAttention_0"]["bilinear"])
  np.testing.assert_allclose(bilinear.apply({"params": with_w}, x),
                             default.apply({"params": base}, x), atol=1e-5)
  # ... and is not the plain dot product.
  dot = models.create_model("ViT-Mu_2", num_classes=5, attention_score="dot")
  assert not np.allclose(dot.apply({"params": base}, x), default.apply({"params": base}, x),
                         atol=1e-4)


def _strip_score_params(tree):
  if not isinstance(tree, dict):
    return tree
  return {k: _strip_score_params(v) for k, v in tree.items() if k != "bilinear"}


def test_cosine_logits_are_bounded_by_the_temperature():
  attn = layers.MultiHeadDotProductAttention(
      num_heads=2, options=models.EncoderOptions(attention_score="cosine"))
  q = jax.random.normal(jax.random.key(0), (1, 5, 2, 8)) * 100.0
  k = jax.random.normal(jax.random.key(1), (1, 5, 2, 8))
  params = {"log_temperature": jnp.log(jnp.asarray([10.0, 1e4]))}
  logits = attn._logits(q, k, params)
  assert float(jnp.max(jnp.abs(logits[:, 0]))) <= 10.0 + 1e-4
  # The second head's temperature is capped at COSINE_MAX_TEMPERATURE.
  assert float(jnp.max(jnp.abs(logits[:, 1]))) <= layers.COSINE_MAX_TEMPERATURE + 1e-3


@pytest.mark.parametrize("score", options.ATTENTION_SCORES)
def test_each_score_trains(score):
  """Ten Adam steps on a fixed batch of ViT-Mu/2 lower the loss of every score."""
  model = models.create_model("ViT-Mu_2", num_classes=4, attention_score=score)
  x = jax.random.uniform(jax.random.key(3), (16, 8, 8, 3), minval=-1, maxval=1)
  labels = jnp.arange(16) % 4
  params = model.init(jax.random.key(0), x)["params"]
  tx = optax.adam(3e-3)

  def loss_fn(p):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(p, opt):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, loss, grads

  opt = tx.init(params)
  params, opt, first, _ = step(params, opt)
  for _ in range(9):
    params, opt, loss, grads = step(params, opt)
  assert float(loss) < 0.8 * float(first), (score, float(first), float(loss))
  # Once the zero-initialised head has moved, the score's own parameters and the
  # query/key projections receive gradient.
  attn_grads = grads["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  for name in set(attn_grads) - {"out", "value"}:
    assert float(jnp.max(jnp.abs(jax.tree.leaves(attn_grads[name])[0]))) > 0.0, name


@pytest.mark.parametrize("variant", ["factorised_dot_product", "factorised_encoder"])
def test_vivit_takes_every_score(variant):
  for score in NON_DEFAULT:
    model = models.create_model("ViViT-Mu_4x2", num_classes=5, variant=variant,
                                attention_score=score)
    params = _perturbed(model.init(jax.random.key(0), _video())["params"])
    fused = model.clone(attention_implementation="xla").apply({"params": params}, _video())
    explicit, _ = models.attention_weights(model, params, _video())
    np.testing.assert_allclose(fused, explicit, atol=1e-5)


def test_unknown_score_is_a_clear_error():
  # Options are validated once, when the model is built.
  with pytest.raises(ValueError, match=r"Unknown attention_score 'softmax'; choose one of"):
    models.create_model("ViT-Mu_2", num_classes=5, attention_score="softmax")
  with pytest.raises(ValueError, match="Unknown attention_score 'luong'"):
    models.create_model("ViViT-Mu_4x2", num_classes=5, attention_score="luong")
