"""ViT-B/16 trained from scratch on ImageNet-1k for 300 epochs: the AugReg recipe.

    python -m vit_jax.main --config configs/vit_b16_i1k_augreg.py --workdir workdirs/b16_augreg \
        --config.data.data_dir=/path/to/tensorflow_datasets

Recipe (Steiner et al., "How to train your ViT?", arXiv 2106.10270;
big_vision/configs/vit_i1k.py with variant=B/16, whose default augmentation for B/16 is
"medium2"): batch 4096, inception crop + flip + RandAugment(2, 15) (`randaug(2,15)`,
docs/augmentation.md), mixup with Beta(0.5, 0.5), class token with a representation
layer (`rep_size=True`), Adam with a bfloat16 first moment, lr 1e-3, 10k warmup steps
then cosine decay, clip 1.0, weight decay 1e-4 as big_vision applies it (not multiplied
by the learning rate; optax's is, so 1e-4 / 1e-3 = 0.1 here), no dropout or stochastic
depth.

Expected: 79.15% ImageNet validation top-1: timm's evaluation of the released AugReg
checkpoint trained this way, `vit_base_patch16_224.augreg_in1k`
(huggingface/pytorch-image-models: results/results-imagenet.csv; docs/published_results.md);
not run here. Differences from big_vision: softmax cross-entropy (big_vision trains with
sigmoid cross-entropy and a head bias of -6.9) and the mixup partner (mirrored batch).
Hardware: the paper trains on TPU v3; expect about 2-3 days on 8 A100s.
"""

import ml_collections

from vit_jax.driver.config import base_config

EPOCHS = 300
TRAIN_EXAMPLES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model_name = "ViT-B_16"
  config.model.representation_size = 768

  config.data.dataset = "imagenet2012"
  config.data.train_split = "train[:99%]"
  config.data.eval_split = "validation"
  config.data.image_size = 224
  config.data.train_crop = "inception"
  config.data.resize_small = 256
  config.data.augment = "randaug(2, 15)"
  config.data.shuffle_buffer = 250_000

  config.batch_size = 4096
  config.total_steps = EPOCHS * TRAIN_EXAMPLES // config.batch_size
  config.optimizer.name = "adamw"
  config.optimizer.mu_dtype = "bfloat16"
  config.optimizer.weight_decay = 0.1
  config.lr.base = 1e-3
  config.lr.warmup_steps = 10_000
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0
  config.mixup.mixup_alpha = 0.5

  config.eval_every_steps = 5_000
  config.checkpoint.every_steps = 2_000
  return config
