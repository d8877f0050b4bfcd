"""A small evaluation config for tests/evals: digits at 8 px, every protocol, short.

    python -m vit_jax.evaluate --config tests/evals/tiny_evals_config.py --source RUN --workdir DIR
"""

import ml_collections

from vit_jax.evals import registry


def get_config() -> ml_collections.ConfigDict:
  c = registry.standalone_config()
  c.data.dataset = "digits"
  c.data.image_size = 8
  c.batch_size = 64
  c.evals.knn = dict(type="knn", features="cls", ks=(5, 20))
  c.evals.linear = dict(type="linear", features=("cls", "cls_last2"), learning_rates=(0.01, 0.1),
                        epochs=3)
  c.evals.fewshot = dict(type="fewshot", shots=(1, 5), seeds=2)
  return c
