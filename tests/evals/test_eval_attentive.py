"""The attentive probe on the fly (mode="on_the_fly"): augmented training batches through a
frozen backbone straight into the probe, the eval split streamed batch by batch.

Real TFDS data (the bundled digits and moving_digits/tiny), random tiny backbones, 1 and 8
forced CPU devices (tests/conftest.py).
"""

import jax
import numpy as np
import pytest

from tests import helpers
from vit_jax import data, models
from vit_jax.driver import parallel
from vit_jax.errors import ConfigError
from vit_jax.evals import attentive, features, registry, runner


def _clips_config(data_dir):
  c = data.default_config()
  c.update(dict(dataset="moving_digits/tiny", data_dir=data_dir, image_size=16, num_frames=4,
                stride=2, num_test_clips=2, flip=False))
  return c


@pytest.mark.slow  # ~25 s: two meshes, each compiling a train and an eval step
def test_on_the_fly_counts_every_clip_once_on_one_and_eight_devices_as_the_cached_path(
    video_data_dir):
  cfg = _clips_config(video_data_dir)
  model = models.create_model("ViViT-Mu_4x2", num_classes=None)
  params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 4, 16, 16, 3)))["params"]
  tokens_of = lambda p, x: features.compute(model, p, x, ("tokens",))["tokens"]
  got = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.create_mesh(1, devices)
    sharding = parallel.batch_sharding(mesh)
    frozen = jax.device_put(params, parallel.replicated(mesh))
    train = data.train_iterator(cfg, global_batch_size=16, sharding=sharding, seed=0)
    probe, probe_params = attentive.train_stream(
        ((b["image"], b["label"]) for b in train), tokens_of, frozen, mesh=mesh,
        num_classes=20, steps=6, num_heads=2, learning_rate=1e-2, warmup_steps=2)
    # 30 test clips x 2 temporal views in batches of 16: the second one padded.
    test = data.eval_iterator(cfg, global_batch_size=16, sharding=sharding)
    out = attentive.evaluate_stream(
        probe, probe_params, ((b["image"], b["label"], b["mask"]) for b in test), tokens_of,
        frozen, mesh=mesh, num_classes=20)
    got[len(devices)] = out, jax.device_get(probe_params)
  assert len(devices) == 8
  (one, params_1), (eight, params_8) = got[1], got[8]
  assert one["num_examples"] == eight["num_examples"] == 30
  # The cached path's figures for the same probe: every clip's tokens [30, V=2, L, D]
  # extracted, the views' logits averaged, ranked by a stable sort.
  cached = features.extract(model, params, cfg, "test", ("tokens",), batch_size=16, mesh=mesh)
  assert cached["tokens"].shape == (30, 2, 2 * 16, 32)  # 2 tubelets x 4 x 4 patches
  logits = attentive.predict_logits(probe, params_8, cached["tokens"])
  top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
  assert eight["top1"] == np.mean(top5[:, 0] == cached["label"])
  assert eight["top5"] == np.mean(np.any(top5 == cached["label"][:, None], axis=1))
  # The same batches on 1 and 8 devices: the same probe, up to float summation order
  # (compared by its outputs: AdamW turns the noise of gradients that are 0 in exact
  # arithmetic, such as the key bias's, into steps of the learning rate's size).
  np.testing.assert_allclose(attentive.predict_logits(probe, params_1, cached["tokens"]),
                             logits, atol=1e-3)
  assert one["top1"] == eight["top1"] and one["top5"] == eight["top5"]


@pytest.mark.slow  # ~15 s
def test_a_probe_trained_on_the_fly_learns_digits_from_a_random_backbone(digits_data_dir):
  """Through the runner on 8 devices: 150 batches of 64 (mild augmentation), 360 test
  digits; chance is 10%. Nothing is extracted or cached."""
  cfg = helpers.load_config("tests/evals/tiny_evals_config.py").data
  cfg.data_dir = str(digits_data_dir)
  evals = {"probe": dict(type="attentive", mode="on_the_fly", steps=150, warmup_steps=10,
                         batch_size_probe=64, num_heads=2, learning_rate=1e-2,
                         data=dict(train_crop="resize", flip=False))}
  mesh = parallel.create_mesh(1)
  model = models.create_model("ViT-Mu_2", num_classes=None)
  params = jax.device_put(model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)))["params"],
                          parallel.replicated(mesh))
  evaluators = runner.Evaluators(evals, cfg, mesh=mesh, eval_batch_size=64,
                                 default_every=None, training=False)
  out = evaluators.run(model, params)
  assert out["probe/num_examples"] == 360
  assert out["probe/top1"] > 0.35, out  # 0.54 measured
  assert out["probe/top5"] >= out["probe/top1"]
  assert evaluators.cache.computed == []  # nothing extracted: both splits streamed


def test_label_smoothing_and_dropout_act_in_training_only():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  labels = np.array([0, 3, 4, 1])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  smoothed = 0.9 * np.eye(5)[labels] + 0.1 / 5  # optax.smooth_labels, as the trainer's
  np.testing.assert_allclose(attentive._losses(logits, labels, 0.1),
                             -(smoothed * logp).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(attentive._losses(logits, labels, 0.0),
                             -logp[np.arange(4), labels], rtol=1e-5)
  probe = attentive.AttentiveProbe(num_classes=3, num_heads=2, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 6, 8))

  @jax.jit  # one program (op-by-op dispatch of the probe is slow)
  def outputs(x):
    params = probe.init(jax.random.key(1), x)["params"]
    test = attentive._apply_views(probe, params, x)
    trained = [attentive._apply_views(probe, params, x, jax.random.key(k)) for k in (2, 3)]
    return test, probe.apply({"params": params}, x), *trained
  test, plain, a, b = outputs(x)
  np.testing.assert_array_equal(test, plain)  # testing: no dropout
  assert not np.allclose(a, test) and not np.allclose(a, b)  # training: a mask per key


def test_on_the_fly_options_are_validated_once_with_short_errors():
  o = registry.validate({"p": {"type": "attentive", "mode": "on_the_fly"}})["p"]
  assert o["steps"] == 1000 and o["warmup_steps"] == 0  # the linear probe's `steps` option
  assert registry.TYPES["attentive"]["mode"] == registry.TYPES["linear"]["mode"] == "cached"
  bad = [({"mode": "on_the_fly", "steps": 0}, "steps must be an int >= 1"),
         ({"mode": "on_the_fly", "steps": 10, "warmup_steps": 10}, "below steps=10"),
         ({"mode": "streaming"}, "mode must be 'cached' or 'on_the_fly'"),
         ({"mode": "on_the_fly", "epochs": 5}, "epochs is read only with mode='cached'"),
         ({"mode": "on_the_fly", "cache": False}, "cache is read only with mode='cached'"),
         ({"steps": 100}, "steps is read only with mode='on_the_fly'"),
         ({"dropout_rate": 1.0}, "dropout_rate must be in \\[0, 1\\)")]
  for entry, message in bad:
    with pytest.raises(ConfigError, match=message):
      registry.validate({"p": {"type": "attentive", **entry}})
  # The linear probe's options follow the same rule (one declaration of the modes).
  with pytest.raises(ConfigError, match="val_fraction is read only with mode='cached'"):
    registry.validate({"l": {"type": "linear", "mode": "on_the_fly", "val_split": "train[:1%]",
                             "val_fraction": 0.2}})
  # On the fly batch_size_probe is the training batch, split over the 8 devices: refused
  # when the evaluators are built, before anything runs.
  with pytest.raises(ConfigError, match="batch_size_probe=12 is not divisible by the 8"):
    runner.Evaluators({"p": {"type": "attentive", "mode": "on_the_fly",
                             "batch_size_probe": 12}}, data.default_config(),
                      mesh=parallel.create_mesh(1), eval_batch_size=16, default_every=None,
                      training=False)
