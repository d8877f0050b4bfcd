"""Entry point: `python -m vit_jax.main --config configs/NAME.py --workdir DIR`.

Until the training driver lands this runs a model smoke test: it builds the
configured model, initialises it and runs one forward pass on random images.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from vit_jax import models

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")


def main(argv):
  del argv
  config = _CONFIG.value
  model = models.create_model(config.model_name, num_classes=config.num_classes,
                              **config.get("model", {}))
  images = jax.random.uniform(jax.random.key(0), (config.batch_size, *config.image_shape),
                              minval=-1, maxval=1)
  start = time.perf_counter()
  params = jax.jit(lambda x: model.init(jax.random.key(0), x))(images)["params"]
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
  logits.block_until_ready()
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"{config.model_name}: {count:,} parameters, logits {logits.shape}, "
        f"init+forward {time.perf_counter() - start:.1f}s on {jax.devices()}")
  assert jnp.all(jnp.isfinite(logits))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
