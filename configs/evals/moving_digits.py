"""Frozen-feature protocols on the bundled moving_digits clips (20 classes = digit x direction).

    python -m vit_jax.main --config configs/vivit_moving_digits.py --workdir workdirs/vivit_md
    python -m vit_jax.evaluate --config configs/evals/moving_digits.py \
        --source workdirs/vivit_md --workdir workdirs/evals_vivit_md
    python -m vit_jax.evaluate --config configs/evals/moving_digits.py \
        --source random:ViViT-Nano_4x2 --workdir workdirs/evals_vivit_md_random

The 3,000 train and 600 test clips (8 frames every 2, 16 px; 2 temporal views per test
clip, their features averaged; the attentive probe averages the views' logits) are read
once per source and cached. The ViViT of configs/vivit_moving_digits.py pools by
average ("gap"), so the vector protocols read `pooled` (= patch_mean there); the
attentive probe reads the 4 x 16 tokens of a clip. Expected (benchmarks/README.md,
'Evaluation protocols'): the trained ViViT-Nano far above a random one of the same size.
"""

import ml_collections

from vit_jax.evals import registry


def get_config() -> ml_collections.ConfigDict:
  c = registry.standalone_config()
  c.data.dataset = "moving_digits"
  c.data.image_size = 16
  c.data.num_frames = 8
  c.data.stride = 2
  c.data.num_test_clips = 2
  c.data.flip = False
  c.batch_size = 120
  c.evals.knn = dict(type="knn", features="pooled", ks=(10, 20, 100, 200))
  c.evals.linear = dict(type="linear", features=("pooled",),
                        learning_rates=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
                        epochs=30, batch_size_probe=128)
  c.evals.fewshot = dict(type="fewshot", features="pooled", shots=(5,), seeds=5)
  c.evals.attentive = dict(type="attentive", num_heads=4, epochs=20, batch_size_probe=128,
                           learning_rate=3e-3)
  return c
