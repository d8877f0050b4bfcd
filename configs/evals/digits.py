"""Frozen-feature protocols on the bundled digits: kNN, a linear sweep, 5-shot, attentive.

    python -m vit_jax.evaluate --config configs/evals/digits.py \
        --source workdirs/vit_digits --workdir workdirs/evals_digits     # after `make run`
    python -m vit_jax.evaluate --config configs/evals/digits.py \
        --source random:ViT-Nano_2 --workdir workdirs/evals_digits_random

The features of the 1,437 train and 360 test digits are extracted once per source (cached
in the workdir); the protocols run on them in seconds. Expected on the 2-core CPU
(benchmarks/README.md, 'Evaluation protocols'): the trained ViT-Nano/2 of `make run` far
above a randomly initialised one of the same size under every protocol, in well under a
minute each.
"""

import ml_collections

from vit_jax.evals import registry


def get_config() -> ml_collections.ConfigDict:
  c = registry.standalone_config()
  c.data.dataset = "digits"
  c.data.image_size = 8
  c.batch_size = 120
  c.evals.knn = dict(type="knn", features="cls", ks=(10, 20, 100, 200))
  c.evals.linear = dict(type="linear", features=("cls", "patch_mean", "cls_last2"),
                        learning_rates=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
                        epochs=30, batch_size_probe=128)
  c.evals.fewshot = dict(type="fewshot", features="cls", shots=(1, 5, 10), seeds=5)
  c.evals.attentive = dict(type="attentive", num_heads=4, epochs=20, batch_size_probe=128,
                           learning_rate=3e-3)
  return c
