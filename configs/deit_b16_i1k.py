"""DeiT-B (ViT-B/16) trained from scratch on ImageNet-1k for 300 epochs: the DeiT recipe.

    python -m vit_jax.main --config configs/deit_b16_i1k.py --workdir workdirs/deit_b16 \
        --config.data.data_dir=/path/to/tensorflow_datasets

Recipe (Touvron et al., "Training data-efficient image transformers", arXiv 2012.12877;
the defaults of facebookresearch/deit main.py): batch 1024, AdamW with lr 5e-4 x batch /
512 = 1e-3, weight decay 0.05 (PyTorch's AdamW multiplies it by the learning rate, as
optax does), 5 warmup epochs, cosine decay to 1e-5, no gradient clipping; random resized
crop (area 0.08-1) + flip, timm RandAugment `rand-m9-mstd0.5-inc1` filled with the
ImageNet mean, random erasing 0.25 ("pixel" mode, after the mean/std normalisation),
repeated augmentation r = 3, mixup 0.8 / cutmix 1.0 (switch probability 0.5, applied to
every batch), label smoothing 0.1, drop path 0.1, no dropout.

Expected: 81.8% ImageNet validation top-1 (facebookresearch/deit README_deit.md, DeiT-B
224; timm's evaluation of that checkpoint gives 81.98; docs/published_results.md); not
run here. Differences from DeiT: bilinear instead of bicubic resizing (crop and
RandAugment); DeiT also keeps a parameter EMA (decay 0.99996) that its reported number
does not use, so this config keeps none (ema_decay > 0 would evaluate the EMA).
Hardware: DeiT trains on 16 V100s (about 3 days for DeiT-B per its README).
"""

import ml_collections

from vit_jax.driver.config import base_config

EPOCHS = 300
WARMUP_EPOCHS = 5
TRAIN_EXAMPLES = 1_281_167
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model_name = "ViT-B_16"
  config.model.stochastic_depth = 0.1
  config.model.dropout_rate = 0.0

  config.data.dataset = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.image_size = 224
  config.data.train_crop = "inception"
  config.data.inception_area = (0.08, 1.0)
  config.data.resize_small = 256  # 224 / 0.875, DeiT's eval resize
  # timm fills RandAugment's geometric ops with the mean in pixels: round(255 * mean).
  config.data.augment = ("timm_randaug('rand-m9-mstd0.5-inc1', fill=(124, 116, 104))|"
                         "random_erasing(0.25, mode='pixel')")
  config.data.repeated_augment = 3
  config.data.value_range = None
  config.data.mean = IMAGENET_MEAN
  config.data.std = IMAGENET_STD

  config.batch_size = 1024
  steps_per_epoch = TRAIN_EXAMPLES // config.batch_size
  config.total_steps = EPOCHS * steps_per_epoch
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.05
  config.lr.base = 5e-4 * config.batch_size / 512
  config.lr.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  config.lr.schedule = "cosine"
  config.lr.end_value = 1e-5
  config.grad_clip_norm = 0.0
  config.label_smoothing = 0.1
  config.mixup.mixup_alpha = 0.8
  config.mixup.cutmix_alpha = 1.0
  config.mixup.switch_prob = 0.5

  config.eval_every_steps = 5_000
  config.checkpoint.every_steps = 2_000
  return config
