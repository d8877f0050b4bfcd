"""source -> (model, params, preprocessing): the one place evaluation reads a backbone.

    backbone = load_backbone("workdirs/vit_digits")             # a run of this project
    backbone = load_backbone("hf-hub:facebook/dinov2-small")    # anything load_pretrained reads
    backbone = load_backbone("random:ViT-Nano_2", input_shape=(8, 8, 3))  # untrained baseline

Every source goes through `vit_jax.checkpoint.load_pretrained`: a workdir with
`config.json` is rebuilt as the run built it (its model, the weights its evaluator scores,
the evaluation input it saved; images and ViViT clips), files, folders and `hf-hub:` ids
give their model and preprocessing; `data_config()` turns either into config.data keys. `random:NAME`
is a registered model without a head, randomly initialised (seeded), which reads the
data as the config gives it: the baseline a trained backbone should beat.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn

from vit_jax import checkpoint, models
from vit_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A model to evaluate.

  Attributes:
    model: the linen module (with its head when the source has one).
    params: its parameters.
    data_overrides: config.data keys that give the input the model expects (size,
      normalisation, eval resize, interpolation; for clips frames and views).
    source: what was loaded.
  """
  model: nn.Module
  params: Any
  data_overrides: dict[str, Any]
  source: str

  @property
  def is_video(self) -> bool:
    return isinstance(self.model, models.VideoTransformer)


RANDOM = "random:"


def load_backbone(source: str, *, input_shape: tuple[int, ...] | None = None,
                  seed: int = 0) -> Backbone:
  """The model, params and input preprocessing of `source` (see the module docstring).

  input_shape: one example's shape, (h, w, 3) or (T, h, w, 3); `random:` sources only.
  """
  source = os.fspath(source)
  if source.startswith(RANDOM):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    try:
      model = models.create_model(source[len(RANDOM):], num_classes=None)
    except ValueError as e:
      raise ConfigError(f"--source {source}: {e}") from None
    params = model.init(jax.random.key(seed), jnp.zeros((1,) + tuple(input_shape)))["params"]
    return Backbone(model, params, {}, source)
  # One entry for every source (checkpoint.load_pretrained): a run's workdir gives its
  # saved evaluation input (clips and views included), a file its preprocessing.
  pre = checkpoint.load_pretrained(source)
  overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.data_config().items()}
  return Backbone(pre.model, pre.params, overrides, source)
