"""DINOv2 ViT-S/14 (distilled) on ImageNet-1k: kNN and the linear-probe sweep, frozen.

    python -m vit_jax.evaluate --config configs/evals/dinov2_s14_imagenet.py \
        --workdir workdirs/dinov2_s14_in1k          # source: hf-hub:facebook/dinov2-small
    python -m vit_jax.evaluate --config configs/evals/dinov2_s14_imagenet.py:smoke \
        --workdir workdirs/dinov2_smoke             # runs here: see below

Published (facebookresearch/dinov2 README, "Pretrained models"; Oquab et al. 2023):
ViT-S/14 distilled, ImageNet-1k k-NN 79.0%, linear 81.1% top-1 (validation split).

Protocol, as DINOv2's eval scripts (dinov2/eval/knn.py, linear.py):
  kNN: the class token after the final norm, L2-normalised, k in {10, 20, 100, 200},
    temperature 0.07 (DINOv2 reports the best k; we report every k).
  linear: one classifier per (learning rate, feature choice) trained together on the
    frozen features, feature choices {last 1, last 4 blocks' class tokens} x {with,
    without the average of the patch tokens}, DINOv2's learning-rate grid (1e-5 ... 0.1),
    the best chosen on a held-out part of train, reported on validation. DINOv2 trains
    its grid with random-resized-crop augmentation on the fly; this config trains on
    cached, augmentation-free features (10 epochs), which reads ImageNet once.
  Input: the checkpoint's preprocessing (resize 256 bicubic, centre crop 224, ImageNet
  mean/std), applied by the source's preprocessor_config.json.
Needs ImageNet-1k prepared for TFDS (`imagenet2012`) and the checkpoint in the Hugging
Face cache (offline). Time: feature extraction of 1.33M images at ViT-S/14 dominates
(hours on a CPU; minutes on a GPU); the sweep then takes minutes.

`:smoke` runs the same evaluators here in about a minute: a randomly initialised
DINOv2-S/14 (`random:DINOv2-S_14`, the family's architecture) on the bundled digits at
28 px (4 patches). Its numbers only show that the pipeline runs; a random backbone is
the baseline a trained one must beat.
"""

import ml_collections

from vit_jax.evals import registry

DINOV2_LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2,
                         5e-2, 0.1)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "smoke"):
    raise ValueError(f"Config argument {arg!r}: use nothing or 'smoke'.")
  c = registry.standalone_config()
  c.source = "hf-hub:facebook/dinov2-small"
  c.data.dataset = "imagenet2012"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.batch_size = 256
  c.evals.knn = dict(type="knn", features="cls", ks=(10, 20, 100, 200), temperature=0.07)
  c.evals.linear = dict(
      type="linear", features=("cls", "cls_patch_mean", "cls_last4", "cls_last4_patch_mean"),
      learning_rates=DINOV2_LEARNING_RATES, epochs=10, batch_size_probe=256, momentum=0.9,
      weight_decay=0.0, val_fraction=0.01)
  if arg == "smoke":
    c.source = "random:DINOv2-S_14"
    c.data.dataset = "digits"
    c.data.train_split, c.data.eval_split = "train", "test"
    c.data.image_size = 28
    c.batch_size = 120
    c.evals.linear.epochs = 3
    c.evals.linear.val_fraction = 0.1
  return c
