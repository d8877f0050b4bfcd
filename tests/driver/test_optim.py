"""Optimizer construction: schedules, masks, layer decay, freezing, bf16 moments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_jax import models
from vit_jax.driver import config as config_lib
from vit_jax.driver import optim


def _config(**overrides):
  c = config_lib.base_config()
  c.total_steps = 100
  c.update_from_flattened_dict(overrides)
  return c


def _params(scan_layers=False):
  model = models.create_model("ViT-Mu_4", num_classes=3, scan_layers=scan_layers)
  return model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "rsqrt", "constant"])
def test_schedules_warm_up_linearly_then_decay(schedule):
  c = _config(**{"lr.schedule": schedule, "lr.base": 0.1, "lr.warmup_steps": 10})
  fn = optim.learning_rate_schedule(c)
  np.testing.assert_allclose([fn(0), fn(5), fn(10)], [0.0, 0.05, 0.1], rtol=1e-5, atol=1e-7)
  if schedule == "constant":
    assert float(fn(99)) == pytest.approx(0.1)
  else:
    assert float(fn(99)) < float(fn(50)) < 0.1
  if schedule in ("cosine", "linear"):
    assert float(fn(100)) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_only_on_kernels():
  mask = optim.weight_decay_mask(_params())
  assert mask["embedding"]["kernel"] and mask["head"]["kernel"]
  assert not mask["embedding"]["bias"] and not mask["cls"]
  assert not mask["Transformer"]["posembed_input"]["pos_embedding"]
  assert not mask["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"]
  assert mask["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]["query"]["kernel"]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_layer_decay_scales(scan_layers):
  scales = optim.layer_decay_scales(_params(scan_layers), 0.5)
  # depth 2: embeddings get 0.5^3, block i gets 0.5^(2 - i), head 1.
  assert float(scales["embedding"]["kernel"]) == 0.125
  assert float(scales["Transformer"]["posembed_input"]["pos_embedding"]) == 0.125
  assert float(scales["head"]["bias"]) == 1.0
  if scan_layers:
    block = scales["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"]
    np.testing.assert_allclose(block.ravel(), [0.25, 0.5])
  else:
    assert float(scales["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"]) == 0.25
    assert float(scales["Transformer"]["encoderblock_1"]["LayerNorm_0"]["scale"]) == 0.5


def test_layer_decay_puts_every_token_and_the_pre_norm_before_the_blocks():
  # A distilled model with registers and CLIP's pre-norm (DeiT / DINOv2 / CLIP options).
  model = models.create_model("ViT-Mu_4", num_classes=3, distilled=True, num_registers=2,
                              pre_norm=True, layer_scale=1e-5)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  scales = optim.layer_decay_scales(params, 0.5)
  for first in (scales["cls"], scales["dist"], scales["registers"],
                scales["Transformer"]["pre_norm"]["scale"]):
    assert float(first) == 0.125
  assert float(scales["head_dist"]["kernel"]) == 1.0
  block1 = scales["Transformer"]["encoderblock_1"]
  assert all(float(x) == 0.5 for x in jax.tree.leaves(block1))  # LayerScale included


def test_freeze_by_regex_leaves_those_parameters_unchanged():
  params = _params()
  c = _config(freeze=(r"^embedding/", r"encoderblock_0/"), **{"lr.base": 0.1})
  tx = optim.create_optimizer(c, params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["embedding"]["kernel"], params["embedding"]["kernel"])
  np.testing.assert_array_equal(new["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"],
                                params["Transformer"]["encoderblock_0"]["LayerNorm_0"]["scale"])
  assert not np.array_equal(new["head"]["bias"], params["head"]["bias"])
  with pytest.raises(ValueError, match="match no parameter"):
    optim.create_optimizer(_config(freeze=("nothing_like_this",)), params)


def test_bf16_first_moment():
  params = _params()
  for name in ("sgd", "adamw"):
    c = _config(**{"optimizer.name": name, "optimizer.mu_dtype": "bfloat16"})
    state = optim.create_optimizer(c, params).init(params)
    dtypes = {x.dtype for x in jax.tree.leaves(state) if x.ndim > 0}
    assert jnp.dtype(jnp.bfloat16) in dtypes


def test_adamw_weight_decay_shrinks_kernels_not_biases():
  params = _params()
  c = _config(**{"optimizer.name": "adamw", "optimizer.weight_decay": 0.5, "lr.base": 0.1,
                 "lr.schedule": "constant", "grad_clip_norm": 0.0})
  tx = optim.create_optimizer(c, params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  k = params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  uk = updates["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  np.testing.assert_allclose(uk, -0.1 * 0.5 * k, rtol=1e-5)
  assert not np.any(updates["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["bias"])


def test_unknown_and_bad_config_values_are_named():
  c = config_lib.base_config()
  c.lerning_rate = 0.1
  c.optimizer.momentun = 0.9
  with pytest.raises(ValueError, match=r"unknown config key 'lerning_rate'.*"
                     r"unknown config key 'optimizer.momentun' \(did you mean 'optimizer.momentum'"):
    config_lib.validate(c)
  c = config_lib.base_config()
  c.batch_size, c.accum_steps = 10, 3
  with pytest.raises(ValueError, match="not divisible by accum_steps 3"):
    config_lib.validate(c)
