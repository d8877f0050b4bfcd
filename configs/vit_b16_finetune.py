"""ViT-B/16 fine-tuned from a released ImageNet-21k checkpoint at 384 px (the vit_jax recipe).

    python -m vit_jax.main --config configs/vit_b16_finetune.py:cifar10 \
        --workdir workdirs/b16_cifar10 --config.init_from.path=/path/to/ViT-B_16.npz

The argument picks the dataset: cifar10, cifar100 or imagenet2012 (TFDS names; the
data must be prepared in --config.data.data_dir first, e.g. `tfds build cifar10`).
The checkpoint is any file vit_jax.checkpoint reads: the released `imagenet21k/ViT-B_16.npz`
(its pre_logits layer is dropped, the head re-initialised for the new classes and the
position embeddings resized from 14x14 to 24x24).

Recipe as released: SGD momentum 0.9, batch 512 (accumulated over 8 micro-batches to fit
one accelerator), lr 0.03 with 500 warmup steps and cosine decay, global-norm clip 1.0,
no weight decay; 10k steps (CIFAR) or 20k steps (ImageNet).

Expected test top-1 (docs/published_results.md, 'Image classification': the vit_jax
README's fine-tuning table): CIFAR-10 99.02%,
CIFAR-100 92.06%, ImageNet 84.53%. Hardware: an 8-chip TPU v3 or 8 A100s takes
a few hours for CIFAR; the same command runs on one GPU with more accum_steps.
"""

import ml_collections

from vit_jax.driver.config import base_config

TOTAL_STEPS = {"cifar10": 10_000, "cifar100": 10_000, "imagenet2012": 20_000}
EVAL_SPLITS = {"cifar10": "test", "cifar100": "test", "imagenet2012": "validation"}


def get_config(dataset: str = "cifar10") -> ml_collections.ConfigDict:
  if dataset not in TOTAL_STEPS:
    raise ValueError(f"Unknown dataset {dataset!r}; use one of {sorted(TOTAL_STEPS)}.")
  config = base_config()
  config.model_name = "ViT-B_16"
  config.init_from.path = "ViT-B_16.npz"

  config.data.dataset = dataset
  config.data.image_size = 384
  if dataset == "imagenet2012":
    config.data.train_split = "train[:99%]"
    config.data.train_crop = "inception"
  else:
    # Small images: upsample, then a random 384 crop of the 448 resize, as released.
    config.data.train_split = "train[:98%]"
    config.data.train_crop = "random_crop"
    config.data.resize_small = 448
  config.data.eval_split = EVAL_SPLITS[dataset]

  config.batch_size = 512
  config.accum_steps = 8
  config.total_steps = TOTAL_STEPS[dataset]
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.lr.base = 0.03
  config.lr.warmup_steps = 500
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0

  config.eval_every_steps = 1_000
  config.checkpoint.every_steps = 1_000
  return config
