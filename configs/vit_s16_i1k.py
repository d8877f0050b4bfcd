"""ViT-S/16 trained from scratch on ImageNet-1k for 90 epochs (the big_vision baseline).

    python -m vit_jax.main --config configs/vit_s16_i1k.py --workdir workdirs/s16_i1k \
        --config.data.data_dir=/path/to/tensorflow_datasets

Recipe (Beyer et al., "Better plain ViT baselines"): global-average pooling, fixed 2-D
sin-cos position embeddings, batch 1024, AdamW (lr 1e-3; big_vision's weight decay 1e-4 is not multiplied by the
learning rate, optax's is, so it is 1e-4 / 1e-3 = 0.1 here), 10k warmup
steps and cosine decay, clip 1.0, inception crop + flip + RandAugment(2, 10)
(big_vision's `randaug(2,10)`, docs/augmentation.md), mixup 0.2.

Expected: 76.5% ImageNet validation top-1 (big_vision README and
big_vision/configs/vit_s16_i1k.py; docs/published_results.md); not run here. Remaining
differences from big_vision: no representation layer (it sets rep_size=True) and the
mixup partner (the batch mirrored; big_vision rolls it by one). Hardware: 8 TPU v3 chips
take about 7 hours; 8 A100s similar.
"""

import ml_collections

from vit_jax.driver.config import base_config

EPOCHS = 90
TRAIN_EXAMPLES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model_name = "ViT-S_16"
  config.model.classifier = "gap"
  config.model.posemb = "sincos2d"

  config.data.dataset = "imagenet2012"
  config.data.train_split = "train[:99%]"
  config.data.eval_split = "validation"
  config.data.image_size = 224
  config.data.train_crop = "inception"
  config.data.resize_small = 256
  config.data.augment = "randaug(2, 10)"

  config.batch_size = 1024
  config.total_steps = EPOCHS * TRAIN_EXAMPLES // config.batch_size
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.1
  config.lr.base = 1e-3
  config.lr.warmup_steps = 10_000
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0
  config.mixup.mixup_alpha = 0.2

  config.eval_every_steps = 5_000
  config.checkpoint.every_steps = 2_000
  return config
