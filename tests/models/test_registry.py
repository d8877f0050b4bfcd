"""Registry tests: every registered ViT has the published parameter count."""

import jax
import jax.numpy as jnp
import pytest

from vit_jax import models

# At 224 px (Mu/Nano at 32 px), 1000 classes, classifier token, no representation layer.
# Ti/16, S/16, B/16, L/16, H/14: docs/published_results.md. Other patch sizes differ only in the
# patch kernel (p*p*3*D) and the position embedding ((224/p)^2 + 1) * D.
EXPECTED_PARAMS = {
    "ViT-Ti_16": 5_717_416,
    "ViT-S_16": 22_050_664,
    "ViT-S_32": 22_878_952,
    "ViT-B_8": 86_576_872,
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-L_16": 304_326_632,
    "ViT-L_32": 306_535_400,
    "ViT-H_14": 632_045_800,
}


def formula(width, depth, mlp, patch, image, classes=1000):
  """Parameter count of a ViT written out by hand, independent of the module code."""
  tokens = (image // patch) ** 2 + 1
  embed = patch * patch * 3 * width + width + width + tokens * width  # conv, cls, posemb
  block = 2 * 2 * width + 4 * (width * width + width) + 2 * width * mlp + mlp + width
  return embed + depth * block + 2 * width + width * classes + classes


def count(name, image):
  model = models.create_model(name, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image, image, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


# ViViT sizes are counted in tests/models/test_vivit.py.
@pytest.mark.parametrize("name", [n for n in models.list_models() if n.startswith("ViT-")])
def test_every_registered_vit_has_its_expected_parameter_count(name):
  kw = models.model_kwargs(name)
  image = 32 if name.split("-")[1].startswith(("Mu", "Nano")) else 224
  by_hand = formula(kw["hidden_size"], kw["num_layers"], kw["mlp_dim"], kw["patch_size"], image)
  assert count(name, image) == by_hand
  if image == 224:
    assert name in EXPECTED_PARAMS, f"{name} is registered without a published count"
    assert count(name, image) == EXPECTED_PARAMS[name]


def test_published_names_are_registered():
  assert set(EXPECTED_PARAMS) <= set(models.list_models())


def test_big_vision_spelling_and_overrides():
  model = models.create_model("B/16", num_classes=10, dropout_rate=0.1, classifier="gap")
  assert (model.hidden_size, model.patch_size, model.num_classes) == (768, 16, 10)
  assert model.dropout_rate == 0.1 and model.classifier == "gap"


def test_unknown_model_and_option_are_clear_errors():
  with pytest.raises(ValueError, match=r"Unknown model 'ViT-X_16'.*ViT-B_16"):
    models.create_model("ViT-X_16")
  with pytest.raises(TypeError, match=r"no option\(s\) \['dropout'\].*dropout_rate"):
    models.create_model("ViT-B_16", dropout=0.1)
