"""ViViT on the bundled `moving_digits` (20 classes = digit x direction): runs on a CPU.

    python -m vit_jax.main --config configs/vivit_moving_digits.py:VARIANT --workdir DIR

VARIANT is one of spatio_temporal (default), factorised_encoder, factorised_self_attention,
factorised_dot_product, or frame_average (the paper's baseline: the factorised encoder's
frame representations averaged instead of a temporal encoder).

From scratch: ViViT-Nano (width 64, 4 layers) with 4x4 patches x 2-frame tubelets on
8 frames (stride 2, so the clip spans the whole 16-frame video) resized to 16x16, which
is the scale of the 8x8 `digits` (the 32x32 canvas holds a 16x16 sprite): 4 x 4x4 = 64
tokens. Hardware and result: on a 2-core CPU each variant takes 2-4 minutes;
benchmarks/README.md ("ViViT") has the measured table. The four ViViT models reach
>= 90% test top-1; frame_average cannot tell left from right (a left-moving clip
visits the same positions as a right-moving one), so it stays near half of its
digit accuracy (<= ~50%).

From the `vit_digits` image checkpoint (add `,vit_digits` to the argument):

    python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/vit_digits
    python -m vit_jax.main --config configs/vivit_moving_digits.py:factorised_encoder,vit_digits \
        --workdir workdirs/vivit_fe_from_image [--config.init_from.path=workdirs/vit_digits]

The image model's 2x2 patches fix the video model's: ViViT-Nano_2x2 on the same 16x16
frames (8x8 = 64 patches per frame; its 4x4 position-embedding grid is resized to 8x8
and tiled over time), tubelet kernel by central-frame inflation (set
`init_from.kernel_init_method`, `init_from.temporal_init`, `init_from.time_attention_init`
to change the inflation); fewer steps, since the spatial encoder starts trained. The
initialisation report is logged. Any image ViT-Nano with 2x2 patches works as
init_from.path. Expected: factorised_encoder >= 90% in about 4 minutes on a 2-core CPU.
"""

import ml_collections

from vit_jax.config import base_config

VARIANTS = ("spatio_temporal", "factorised_encoder", "factorised_self_attention",
            "factorised_dot_product", "frame_average")
TOKEN_VARIANTS = ("spatio_temporal", "factorised_encoder", "frame_average")


def get_config(arg: str = "spatio_temporal") -> ml_collections.ConfigDict:
  variant, *options = arg.split(",")
  if variant not in VARIANTS or set(options) - {"vit_digits"}:
    raise ValueError(f"Config argument {arg!r}: use VARIANT or VARIANT,vit_digits with "
                     f"VARIANT one of {VARIANTS}.")
  from_image = "vit_digits" in options
  config = base_config()
  config.model_name = "ViViT-Nano_2x2" if from_image else "ViViT-Nano_4x2"
  if variant == "frame_average":
    # One frame per token: a 2-frame tubelet already shows the motion to the per-frame
    # encoder, and the average then separates the directions (measured: 100%).
    config.model_name = config.model_name.replace("x2", "x1")
  config.model.variant = variant
  # Average pooling for every variant from scratch (the factorised attention models
  # support no other): it also learns the position-varying digits faster than a cls
  # token. From the image model, the variants that have a cls token use its trained one.
  config.model.classifier = "token" if from_image and variant in TOKEN_VARIANTS else "gap"
  config.model.dropout_rate = 0.0  # 3,000 procedural clips; augmentation is the crop jitter

  config.data.dataset = "moving_digits"
  config.data.image_size = 16
  config.data.num_frames = 8
  config.data.stride = 2
  config.data.scale_jitter = (1.0, 1.25)
  config.data.flip = False  # a flip turns a left-moving digit into a right-moving one
  config.data.num_test_clips = 2  # the two offsets of an 8-frame stride-2 clip in 16 frames
  config.data.shuffle_buffer = 3_000
  config.data.cache = True

  config.batch_size = 32
  config.eval_batch_size = 120
  config.total_steps = 1_000
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.05
  config.lr.base = 1e-3
  config.lr.warmup_steps = 100
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.1

  if from_image:
    config.init_from.path = "workdirs/vit_digits"
    config.init_from.kernel_init_method = "central_frame"
    # 4x more tokens per frame than from scratch: 4 frames 4 apart (t=2) keep a run short.
    config.data.num_frames = 4
    config.data.stride = 4
    config.total_steps = 300
    config.lr.warmup_steps = 30

  config.log_every_steps = 100
  config.eval_every_steps = 0
  config.checkpoint.every_steps = 500
  return config
