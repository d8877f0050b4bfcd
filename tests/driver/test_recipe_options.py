"""Every optimisation and regularisation key a recipe sets changes what training computes.

Each test fails if its option were ignored on the way from the config to the step:
label smoothing and mixup/cutmix (and which of the two) in the train step's loss,
layer decay in the optimizer's update, drop path (model.stochastic_depth) in the model
the driver builds, the parameter EMA in the step (tests/driver/test_train.py checks its
formula too). Tiny ViT-Mu/2 on 8x8 inputs, one jitted step each.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import models
from vit_jax.data import mixing
from vit_jax.driver import config as config_lib
from vit_jax.driver import optim, steps, train

NUM_CLASSES = 10
# One run of the step serves the label-smoothing and the EMA test (each compile costs seconds).
SMOOTHING_AND_EMA = (("label_smoothing", 0.1), ("ema_decay", 0.9))


@functools.cache
def _model_and_batch():
  model = models.create_model("ViT-Mu_2", num_classes=NUM_CLASSES)
  images = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(1), images)["params"]
  # Larger weights than the init, so that logits (and hence the losses compared) differ.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(3), p.shape), params)
  return model, params, {"image": images, "label": jnp.arange(8) % NUM_CLASSES}


def _setup(overrides=()):
  c = config_lib.base_config()
  c.optimizer.name, c.lr.base, c.total_steps = "sgd", 0.1, 10
  c.update_from_flattened_dict(dict(overrides))
  model, params, batch = _model_and_batch()
  tx = optim.create_optimizer(c, params)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(2)),
                           ema_params=params if c.ema_decay else None)
  return c, model, tx, state, batch


@functools.cache
def _step(overrides=()):
  """(state before, state after, metrics) of one jitted train step with these config keys."""
  c, model, tx, state, batch = _setup(overrides)
  new, metrics = jax.jit(steps.make_train_step(model, tx, c, NUM_CLASSES))(state, batch)
  return state, new, metrics


def _loss(targets_fn=lambda x, t, rng: (x, t)) -> float:
  """The loss computed here from the step's own rng, with targets_fn(images, targets, rng)."""
  _, model, _, state, batch = _setup()
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  mix_rng, _ = jax.random.split(step_rng)
  targets = jax.nn.one_hot(batch["label"], NUM_CLASSES)
  images, targets = targets_fn(batch["image"], targets, mix_rng)
  logits = model.apply({"params": state.params}, images)  # no dropout in ViT-Mu by default
  return float(jnp.mean(steps.cross_entropy(logits, targets)))


def test_label_smoothing_is_applied_in_the_step():
  smoothed = float(_step(SMOOTHING_AND_EMA)[2]["loss"])
  assert smoothed == pytest.approx(_loss(lambda x, t, r: (x, optax.smooth_labels(t, 0.1))),
                                   rel=1e-5)
  assert abs(smoothed - _loss()) > 1e-3  # the unsmoothed loss


@pytest.mark.parametrize("switch_prob", [0.0, 1.0])
def test_mixup_cutmix_and_switch_prob_are_applied_in_the_step(switch_prob):
  keys = (("mixup.mixup_alpha", 0.8), ("mixup.cutmix_alpha", 1.0),
          ("mixup.switch_prob", switch_prob))
  loss = float(_step(keys)[2]["loss"])

  def mixed(prob):
    return lambda x, t, rng: mixing.mix(rng, x, t, mixup_alpha=0.8, cutmix_alpha=1.0,
                                        switch_prob=prob)

  assert loss == pytest.approx(_loss(mixed(switch_prob)), rel=1e-5)
  assert abs(loss - _loss(mixed(1 - switch_prob))) > 1e-3  # the other method of the two
  assert abs(loss - _loss()) > 1e-3  # no mixing


def test_layer_decay_scales_the_update():
  c, _, _, state, _ = _setup()
  grads = jax.tree.map(jnp.ones_like, state.params)

  def first_update(decay):
    cfg = c.copy_and_resolve_references()
    cfg.lr.layer_decay, cfg.grad_clip_norm, cfg.optimizer.momentum = decay, 0.0, 0.0
    tx = optim.create_optimizer(cfg, state.params)
    return tx.update(grads, tx.init(state.params), state.params)[0]

  full, decayed = first_update(1.0), first_update(0.5)
  ratio = jax.tree.map(lambda d, f: np.asarray(d / f), decayed, full)
  # depth 2: embeddings 0.5^3, block i 0.5^(2 - i), head 1 (see optim.layer_decay_scales).
  np.testing.assert_allclose(ratio["embedding"]["kernel"], 0.125, rtol=1e-6)
  np.testing.assert_allclose(ratio["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"], 0.25,
                             rtol=1e-6)
  np.testing.assert_allclose(ratio["head"]["kernel"], 1.0, rtol=1e-6)


def test_drop_path_reaches_the_model_the_driver_builds():
  c = config_lib.base_config()
  c.model_name = "ViT-Mu_2"
  c.model.stochastic_depth = 0.3
  model = train.build_model(c, NUM_CLASSES)
  assert model.options.stochastic_depth == 0.3
  images = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  params = model.init(jax.random.key(1), images)["params"]
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(3), p.shape), params)
  clean = model.apply({"params": params}, images)
  dropped = model.apply({"params": params}, images, train=True,
                        rngs={"dropout": jax.random.key(4)})
  assert float(jnp.max(jnp.abs(dropped - clean))) > 1e-4  # ViT-Mu has no other dropout


def test_ema_is_kept_by_the_step():
  state, new, _ = _step(SMOOTHING_AND_EMA)
  expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.params, new.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               new.ema_params, expected)
  assert new.eval_params is new.ema_params
