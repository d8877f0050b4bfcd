"""Fingerprints of the compiled programs: a refactor that must not change numerics or
speed should leave these hashes unchanged.

    python benchmarks/program_fingerprint.py

Prints, per model, the SHA-256 prefix of the jaxpr of the training gradient (dropout and
stochastic depth on, a MAP head, a scanned and rematerialised ViViT). Run it on two
checkouts (PYTHONPATH=<checkout>) and compare: equal hashes mean the same program.
"""

import hashlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vit_jax.models import create_model  # noqa: E402

CASES = [
    ("ViT-Ti_16", (2, 64, 64, 3), dict(stochastic_depth=0.1, dropout_rate=0.1)),
    ("ViT-Mu_4", (2, 16, 16, 3), dict(classifier="map")),
    ("ViViT-Mu_4x2", (2, 4, 16, 16, 3),
     dict(variant="factorised_self_attention", scan_layers=True, remat=True)),
]


def fingerprint(name, shape, options) -> str:
  model = create_model(name, num_classes=5, **options)
  x = jnp.zeros(shape)
  params = model.init(jax.random.key(0), x)["params"]
  loss = lambda p, x: jnp.sum(model.apply({"params": p}, x, train=True,
                                          rngs={"dropout": jax.random.key(1)}))
  jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params, x))
  return hashlib.sha256(jaxpr.encode()).hexdigest()[:16]


if __name__ == "__main__":
  print("| model | options | grad jaxpr sha256 |\n| --- | --- | --- |")
  for name, shape, options in CASES:
    print(f"| {name} | {options} | {fingerprint(name, shape, options)} |")
