"""VideoMAE end-to-end fine-tuning (Tong et al., 2022), from a transformers VideoMAE folder.

    python -m vit_jax.main --config configs/videomae_finetune.py:k400 --workdir DIR \
        --config.data.dataset=folder:/path/to/kinetics400 \
        --config.init_from.path=hf-hub:MCG-NJU/videomae-base
    python -m vit_jax.main --config configs/videomae_finetune.py:ssv2 --workdir DIR \
        --config.data.dataset=folder:/path/to/something_something_v2 \
        --config.init_from.path=hf-hub:MCG-NJU/videomae-base-short-ssv2
    # Smoke run on the bundled moving_digits/tiny clips (runs on this CPU): a tiny VideoMAE
    # folder written with the transformers names (any VideoMAE folder you hold works too).
    python -c "import jax, jax.numpy as jnp; from vit_jax import checkpoint, models; \
m = models.create_model('VideoMAE-Mu_4x2', num_classes=None, fc_norm=False); \
p = m.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)))['params']; \
checkpoint.save_hf_video(p, m, 'workdirs/videomae_mu', num_frames=4, image_size=16)"
    python -m vit_jax.main --config configs/videomae_finetune.py:smoke \
        --workdir workdirs/videomae_smoke --config.init_from.path=workdirs/videomae_mu

`model_name="from_checkpoint"`: the ViT-B/16 encoder of the folder (its fixed sinusoidal
table is recomputed for the clip), mean pooling with fc_norm and a new zero head; the
folder's normalisation (ImageNet mean/std) and crop. The pre-training folders (use_mean_pooling
false) keep their encoder norm before the mean, where VideoMAE's fine-tuning code drops it
for a fresh fc_norm: the one difference in the model.

Recipes (MCG-NJU/VideoMAE: scripts/{kinetics,ssv2}/videomae_vit_base_patch16_224_
tubemasking_ratio_0.9_epoch_{1600,2400}/finetune.sh and run_class_finetuning.py's
defaults; paper Table 11):
- k400: from the 1600-epoch K400 pre-training (hf-hub:MCG-NJU/videomae-base). 16 frames
  every 4th, 224 px; AdamW (0.9, 0.999), lr 5e-4 x 384 / 256 = 7.5e-4 (384 clips per step:
  6 x 64 GPUs, each clip twice with repeated augmentation: 768 samples), weight decay 0.05,
  layer-wise lr decay 0.75, drop path 0.1, 5 warmup epochs then cosine to 1.5e-6, 75
  epochs; RandAugment rand-m7-n4-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / cutmix
  1.0, label smoothing 0.1, flips. Test: 5 clips x 3 crops. Published K400 top-1: 81.5%.
- ssv2: from the 2400-epoch SSv2 pre-training (hf-hub:MCG-NJU/videomae-base-short-ssv2).
  As k400 but 30 epochs, no flips (left/right classes), test 2 clips x 3 crops. Published
  SSv2 top-1: 70.8%.
- smoke: the k400 recipe's optimizer and augmentation at CPU size on moving_digits/tiny
  (4 frames of 16 px, 40 steps of 8 clips): it checks that the whole path runs (folder ->
  model -> augmented clips -> layer-decayed AdamW -> evaluation), not the accuracy. From
  the random VideoMAE-Mu folder above: 1 min 48 s on a loaded 2-core CPU, top-1 3.3% on
  the 30 test clips (20 classes, chance 5%; measured once, seed 0).

Differences, stated: VideoMAE samples SSv2 with TSN segments (one frame from each of 16
equal segments); this pipeline takes 16 frames every 2nd (`data.stride`). Its training
crop is a random resized crop (area 0.08..1, aspect 3/4..4/3) of the clip; this pipeline's
clips get its short-side jitter (256..320 px for the 224 crop, `data.scale_jitter`) and a
random 224 crop. Epochs are converted with the train-set sizes below (Kinetics-400 as
VideoMAE's lists: 240,436 clips; SSv2 168,913). The published numbers are what the recipes
aim at (64 V100s, days); they are not reproduced here.
"""

import ml_collections

from vit_jax.driver.config import FROM_CHECKPOINT, base_config

RECIPES = ("k400", "ssv2", "smoke")
# recipe: (dataset, train clips, epochs, stride, test clips, flip)
_DATASETS = {
    "k400": ("folder:data/kinetics400", 240_436, 75, 4, 5, True),
    "ssv2": ("folder:data/something_something_v2", 168_913, 30, 2, 2, False),
}
CLIPS_PER_STEP = 384  # 6 per GPU x 64 GPUs; repeated augmentation doubles the samples
REPEATS = 2
BASE_LR = 5e-4  # per 256 clips (VideoMAE scales lr by clips per step / 256)
WARMUP_EPOCHS = 5


def _recipe(config: ml_collections.ConfigDict) -> None:
  """What every recipe shares (run_class_finetuning.py's defaults as the scripts set them)."""
  config.model_name = FROM_CHECKPOINT
  config.model.stochastic_depth = 0.1
  config.optimizer.name = "adamw"
  config.optimizer.b1, config.optimizer.b2 = 0.9, 0.999
  config.optimizer.weight_decay = 0.05
  config.lr.schedule = "cosine"
  config.lr.layer_decay = 0.75
  config.grad_clip_norm = 0.0  # clip_grad None
  config.label_smoothing = 0.1
  config.mixup.mixup_alpha = 0.8
  config.mixup.cutmix_alpha = 1.0
  # Shorter side to 256..320 for the 224 crop, as VideoMAE's short-side jitter.
  config.data.scale_jitter = (round(256 / 224, 3), round(320 / 224, 3))
  config.data.augment = "timm_randaug('rand-m7-n4-mstd0.5-inc1')|random_erasing(0.25)"
  config.data.repeated_augment = REPEATS
  config.data.num_frames = 16
  config.data.image_size = 224
  config.data.num_test_crops = 3


def get_config(arg: str = "k400") -> ml_collections.ConfigDict:
  if arg not in RECIPES:
    raise ValueError(f"Config argument {arg!r}: use one of {RECIPES}.")
  config = base_config()
  _recipe(config)
  if arg == "smoke":
    config.data.dataset = "moving_digits/tiny"
    config.data.num_frames = 4
    config.data.stride = 2
    config.data.image_size = 16
    config.data.flip = False  # moving_digits labels the direction of motion
    config.data.scale_jitter = (1.0, 1.25)
    config.data.num_test_crops = 1
    config.data.shuffle_buffer = 80
    config.batch_size = 8
    config.eval_batch_size = 10
    config.total_steps = 40
    config.lr.base = 1e-3
    config.lr.warmup_steps = 4
    config.log_every_steps = 10
    config.eval_every_steps = 40
    config.checkpoint.every_steps = 40
    return config
  dataset, clips, epochs, stride, test_clips, flip = _DATASETS[arg]
  config.data.dataset = dataset
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.stride = stride
  config.data.flip = flip
  config.data.num_test_clips = test_clips
  steps_per_epoch = clips // CLIPS_PER_STEP
  config.batch_size = CLIPS_PER_STEP * REPEATS  # samples per step: each clip twice
  config.eval_batch_size = 64
  config.total_steps = epochs * steps_per_epoch
  config.lr.base = BASE_LR * CLIPS_PER_STEP / 256
  config.lr.end_value = 1e-6 * CLIPS_PER_STEP / 256
  config.lr.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint.every_steps = 1_000
  return config
