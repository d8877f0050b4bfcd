"""SigLIP So400m/14 image tower: big_vision's few-shot linear regression on ImageNet-1k.

    python -m vit_jax.evaluate --config configs/evals/siglip_so400m_fewshot.py \
        --workdir workdirs/siglip_fewshot   # source: hf-hub:google/siglip-so400m-patch14-384
    python -m vit_jax.evaluate --config configs/evals/siglip_so400m_fewshot.py:smoke \
        --workdir workdirs/siglip_smoke     # runs here: see below

Protocol: big_vision/evaluators/fewshot_lsr.py (Zhai et al. 2022, "Scaling Vision
Transformers"; SigLIP, Zhai et al. 2023, reports its models with it): the pooled image
embedding (SigLIP's MAP head output), k in {1, 5, 10, 25} shots per class drawn with
numpy default_rng(seed) per class, 3 seeds, features standardised, a bias feature of
100, targets in {-1, 1}, closed-form ridge with l2_reg = 2^10, accuracy on validation.
Expected: no published ImageNet few-shot figure of this checkpoint was verified for this
config (the SigLIP papers report zero-shot and retrieval for So400m); record what it
gives here before relying on it.

Input: the checkpoint's preprocessing (384 px, pixels to [-1, 1], from its
preprocessor_config.json). Needs `imagenet2012` prepared for TFDS and the checkpoint in
the Hugging Face cache (offline).

`:smoke` runs the same evaluator here in under a minute: a randomly initialised tiny ViT
with the MAP head's place taken by the class token (`random:ViT-Mu_2`) on the bundled
digits at 8 px.
"""

import ml_collections

from vit_jax.evals import registry


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "smoke"):
    raise ValueError(f"Config argument {arg!r}: use nothing or 'smoke'.")
  c = registry.standalone_config()
  c.source = "hf-hub:google/siglip-so400m-patch14-384"
  c.data.dataset = "imagenet2012"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.batch_size = 128
  c.evals.fewshot = dict(type="fewshot", features="pooled", shots=(1, 5, 10, 25), seeds=3,
                         l2_reg=2.0 ** 10)
  if arg == "smoke":
    c.source = "random:ViT-Mu_2"
    c.data.dataset = "digits"
    c.data.train_split, c.data.eval_split = "train", "test"
    c.data.image_size = 8
    c.batch_size = 120
  return c
