"""The model's own head on the eval split: top-1, top-5 and loss, every example once.

What the driver has always reported (results.json `top1`, `top5`, `loss`,
`num_examples`); the jitted step is vit_jax.driver.steps.make_eval_step (multi-view
videos: the views' logits averaged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.driver import parallel, steps
from vit_jax.errors import ConfigError


def jit_step(model: nn.Module, num_classes: int, mesh: jax.sharding.Mesh,
             params_shardings: Any = None):
  """The eval step jitted over `mesh` (params as `params_shardings`, default: as given)."""
  return jax.jit(steps.make_eval_step(model, num_classes),
                 in_shardings=(params_shardings, parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def evaluate(eval_step, params: Any, data_config: Mapping[str, Any], *, batch_size: int,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """{"top1", "top5", "loss", "num_examples"} over data_config's eval_split."""
  from vit_jax import data  # noqa: PLC0415 (TensorFlow only where data is read)

  totals = None
  for batch in data.eval_iterator(data_config, global_batch_size=batch_size,
                                  sharding=parallel.batch_sharding(mesh)):
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ConfigError(f"The evaluation split {data_config['eval_split']!r} is empty: "
                      "check data.eval_split.")
  totals = jax.device_get(totals)
  count = float(totals["num_examples"])
  return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
          "loss": float(totals["loss"]) / count, "num_examples": int(count)}
