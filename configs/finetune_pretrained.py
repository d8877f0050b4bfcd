"""Linear probe or full fine-tune of any pretrained backbone, the model taken from the file.

    # On the bundled digits (runs on this CPU), from a file or Hub id you have:
    python -m vit_jax.main --config configs/finetune_pretrained.py:probe \
        --workdir workdirs/probe --config.init_from.path=hf-hub:facebook/dinov2-small
    python -m vit_jax.main --config configs/finetune_pretrained.py:finetune \
        --workdir workdirs/ft --config.init_from.path=PATH_TO/model.safetensors
    # The published recipes (ImageNet-1k, prepared with TFDS):
    python -m vit_jax.main --config configs/finetune_pretrained.py:dinov2_linear \
        --workdir workdirs/dinov2_s14_linear --config.init_from.path=hf-hub:facebook/dinov2-small
    python -m vit_jax.main --config configs/finetune_pretrained.py:mae_finetune \
        --workdir workdirs/mae_b16_ft --config.init_from.path=hf-hub:facebook/vit-mae-base

`model_name="from_checkpoint"`: the architecture (family, size, tokens, LayerScale, ...)
comes from `init_from.path` (any file, folder or hf-hub: id that
`vit_jax.checkpoint.load_pretrained` reads), with a new zero head for the dataset, the
position embedding resized to `data.image_size`, and the checkpoint's input normalisation
and evaluation crop (`init_from.preprocessing`).

Recipes:
- probe: frozen backbone, a linear head on the pooled output (the normed cls token for
  DINOv2 / CLIP / MAE, SigLIP's MAP head), SGD-momentum. digits at 112 px.
- finetune: everything trained, AdamW, layer-wise lr decay 0.65, drop path 0.1, label
  smoothing 0.1. digits at 112 px.
- dinov2_linear: DINOv2's linear evaluation (facebookresearch/dinov2: README.md,
  `dinov2/eval/linear.py`): frozen backbone, SGD-momentum 0.9, 12,500 iterations at batch
  1024, random-resized crop + flip, 224 px. Published ImageNet-1k linear top-1 (README):
  ViT-S/14 81.1%, B/14 84.5%, L/14 86.3%, g/14 86.5% (with registers 80.9 / 84.6 / 86.7 /
  87.1). Their linear layer reads the cls token concatenated with the mean patch token and
  picks the best of a grid of learning rates; this head reads the pooled output at one lr
  (`--config.lr.base` to sweep), so expect somewhat less.
- mae_finetune: MAE's end-to-end fine-tune of ViT-B/16 (facebookresearch/mae:
  FINETUNE.md): 100 epochs at batch 1024, AdamW (0.9, 0.999), lr 5e-4 x 1024 / 256 = 2e-3,
  weight decay 0.05, layer decay 0.65, drop path 0.1, 5 warmup epochs, RandAugment
  rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1,
  global average pooling with fc_norm. Published: 83.6% ImageNet-1k top-1 (ViT-B/16);
  8 x 8 V100 days, not reproduced here.

Hardware: on a 2-core CPU, from a ViT-S/14 folder (DINOv2-S), probe ran at ~12 images/s
at 112 px (reported in issue #28): its 300 steps of 64 images take ~27 minutes, and
finetune (a backward pass through the backbone too) longer. A frozen backbone still runs
its forward pass on every step; `--config.total_steps=50` gives a quick, rougher probe.
The ImageNet recipes want 8+ accelerators.
"""

import ml_collections

from vit_jax.driver.config import FROM_CHECKPOINT, base_config

RECIPES = ("probe", "finetune", "dinov2_linear", "mae_finetune")
EVERYTHING_BUT_THE_HEAD = "^(?!head/|head_dist/).*"


def _digits(config: ml_collections.ConfigDict) -> None:
  config.data.dataset = "digits"
  config.data.image_size = 112  # 8 x 8 patches of 14 px (DINOv2), 7 x 7 of 16 px
  config.data.train_crop = "resize"
  config.data.flip = False
  config.data.shuffle_buffer = 2_000
  config.data.cache = True
  config.batch_size = 64
  config.eval_batch_size = 120
  config.total_steps = 300
  config.lr.warmup_steps = 30
  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint.every_steps = 150


def _imagenet(config: ml_collections.ConfigDict, steps: int) -> None:
  config.data.dataset = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.image_size = 224
  config.data.train_crop = "inception"
  config.data.flip = True
  config.batch_size = 1024
  config.total_steps = steps
  config.log_every_steps = 100
  config.eval_every_steps = 2_500
  config.checkpoint.every_steps = 2_500


def get_config(recipe: str = "probe") -> ml_collections.ConfigDict:
  if recipe not in RECIPES:
    raise ValueError(f"configs/finetune_pretrained.py:{recipe}: choose one of {RECIPES}.")
  config = base_config()
  config.model_name = FROM_CHECKPOINT
  config.init_from.path = ""  # required: --config.init_from.path=FILE_FOLDER_OR_HF_HUB_ID
  config.init_from.reset_head = True
  if recipe in ("probe", "finetune"):
    _digits(config)
  if recipe in ("probe", "dinov2_linear"):
    config.freeze = (EVERYTHING_BUT_THE_HEAD,)
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.lr.schedule = "cosine"
    config.lr.base = 0.1 if recipe == "probe" else 0.001 * 1024 / 256
  if recipe == "dinov2_linear":
    _imagenet(config, steps=12_500)
    config.lr.warmup_steps = 0
  if recipe in ("finetune", "mae_finetune"):
    config.optimizer.name = "adamw"
    config.optimizer.b1, config.optimizer.b2 = 0.9, 0.999
    config.optimizer.weight_decay = 0.05
    config.lr.layer_decay = 0.65
    config.model.stochastic_depth = 0.1
    config.label_smoothing = 0.1
    config.grad_clip_norm = 0.0
    config.lr.schedule = "cosine"
    config.lr.base = 1e-3 if recipe == "finetune" else 5e-4 * 1024 / 256
  if recipe == "mae_finetune":
    steps_per_epoch = 1_281_167 // 1024
    _imagenet(config, steps=100 * steps_per_epoch)
    config.lr.warmup_steps = 5 * steps_per_epoch
    config.model.classifier = "gap"  # MAE's global_pool: average the patch tokens ...
    config.model.fc_norm = True  # ... then LayerNorm them (a new fc_norm, as MAE does)
    config.data.augment = "timm_randaug('rand-m9-mstd0.5-inc1')|random_erasing(0.25)"
    config.mixup.mixup_alpha = 0.8
    config.mixup.cutmix_alpha = 1.0
    config.mixup.switch_prob = 0.5
  return config
