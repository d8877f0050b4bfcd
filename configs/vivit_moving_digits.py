"""ViViT on the bundled `moving_digits` (20 classes = digit x direction): runs on a CPU.

    python -m vit_jax.main --config configs/vivit_moving_digits.py:VARIANT --workdir DIR
    python benchmarks/vivit_moving_digits.py --workdir workdirs/vivit_md   # all, with a table

VARIANT is one of spatio_temporal (default), factorised_encoder, factorised_self_attention,
factorised_dot_product, or frame_average (the paper's baseline: the factorised encoder's
frame representations averaged instead of a temporal encoder).

From scratch: ViViT-Nano (width 64, 4 layers, average pooling) with 4x4 patches x
2-frame tubelets on 8 frames (stride 2, so a clip spans the 16-frame video) resized to
16x16, the scale of the 8x8 `digits` (the 32x32 canvas holds a 16x16 sprite): 4 x 16
tokens; AdamW, 1,000 steps of 32 clips; 2 temporal views per test clip. frame_average
uses one frame per token (ViViT-Nano_4x1, 8 x 16 tokens): a 2-frame tubelet would show
the motion to its per-frame encoder.

Hardware and result (benchmarks/README.md, "ViViT"): on a 2-core CPU each run
took 4-10 minutes. Test top-1: spatio_temporal 71.8%, factorised_encoder 56.8%,
factorised_self_attention 53.0%, factorised_dot_product 68.0%, all with >= 99.8% of the
directions right (1,000 steps are too few to learn all the digits); frame_average 44.0%
= its 89.2% digit accuracy x a chance-level 47.7% on the direction (a left-moving clip
visits the same positions as a right-moving one, and the average forgets the order).

Video augmentation (`--config.data.augment=...`, benchmarks/README.md "Video augmentation on
moving_digits") does not help here: the models underfit (spatio_temporal scores 64.4% on
its own training clips after 1,000 steps and 90.1% after 3,000, no higher than on the
test clips), so `rotate(10, fill=0)` (67.5%; 87.0% vs. 89.8% at 3,000 steps) and
`dmvr_color(0.8, 0.1)` (71.2%) only cost accuracy; the config keeps the crop jitter alone.

From the `vit_digits` image checkpoint (add `,vit_digits` to the argument):

    python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/vit_digits
    python -m vit_jax.main --config configs/vivit_moving_digits.py:factorised_encoder,vit_digits \
        --workdir workdirs/vivit_fe_from_image [--config.init_from.path=workdirs/vit_digits]

The image model's 2x2 patches fix the video model's: ViViT-Nano_2x2 on the same 16x16
frames (8x8 = 64 patches per frame, so 4 frames 4 apart to keep the run short; its 4x4
position-embedding grid is resized to 8x8 and tiled over time), tubelet kernel by
central-frame inflation (`init_from.kernel_init_method`, `init_from.temporal_init`,
`init_from.time_attention_init` change the inflation), 300 steps; the initialisation
report is logged. Any image ViT-Nano with 2x2 patches works as init_from.path.
Measured: factorised_encoder 35.8% after 300 steps (2m47s on a 2-core CPU): the
image model saw digits filling the frame, without translations, and transfers poorly to a
small digit moving in a larger canvas.

From the `vit_digits.py:canvas` image run (`,vit_canvas`), the image-to-video transfer demo:

    python -m vit_jax.main --config configs/vit_digits.py:canvas --workdir workdirs/vit_digits_canvas
    python -m vit_jax.main --config configs/vivit_moving_digits.py:factorised_encoder,vit_canvas \
        --workdir workdirs/vivit_fe_from_canvas [--config.init_from.path=workdirs/vit_digits_canvas]
    python benchmarks/video_transfer.py --workdir workdirs/video_transfer --parallel 2  # the table

That image model saw the video's frames as still images (a 2x digit anywhere on the 32x32
canvas, resized to 16x16) with the 4x4 patches and width of ViViT-Nano_4x2, so the video
model is that of the runs from scratch above (8 frames, stride 2) with a cls token, its
frame encoder inflated from the image run (central-frame tubelet kernel); 300 steps.
Measured over seeds 0-2 (benchmarks/README.md, "Image-to-video transfer"): factorised_encoder
45.1% initialised vs. 24.7% from scratch (spreads 1.0 and 1.8 points): the image model
gives the digit (91.8% right, seed 0), but in 300 steps the initialised model does not learn
the direction (48.7%, chance), which scratch gets right (100%).
"""

import ml_collections

from vit_jax.driver.config import base_config

VARIANTS = ("spatio_temporal", "factorised_encoder", "factorised_self_attention",
            "factorised_dot_product", "frame_average")
TOKEN_VARIANTS = ("spatio_temporal", "factorised_encoder", "frame_average")
# The image runs a video model can start from: configs/vit_digits.py and its `:canvas`.
IMAGE_RUNS = ("vit_digits", "vit_canvas")


def get_config(arg: str = "spatio_temporal") -> ml_collections.ConfigDict:
  variant, *options = arg.split(",")
  if variant not in VARIANTS or len(options) > 1 or set(options) - set(IMAGE_RUNS):
    raise ValueError(f"Config argument {arg!r}: use VARIANT or VARIANT,IMAGE_RUN with "
                     f"VARIANT one of {VARIANTS} and IMAGE_RUN one of {IMAGE_RUNS}.")
  from_image = "vit_digits" in options
  from_canvas = "vit_canvas" in options
  config = base_config()
  config.model_name = "ViViT-Nano_2x2" if from_image else "ViViT-Nano_4x2"
  if variant == "frame_average":
    # One frame per token: a 2-frame tubelet already shows the motion to the per-frame
    # encoder, and the average then separates the directions (measured: 100%).
    config.model_name = config.model_name.replace("x2", "x1")
  config.model.variant = variant
  # Average pooling for every variant from scratch (the factorised attention models
  # support no other), so the variants differ in their attention only. From the image
  # model, the variants that have a cls token use its trained one.
  config.model.classifier = "token" if options and variant in TOKEN_VARIANTS else "gap"
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

  if from_canvas:
    # ViViT-Nano_4x2 as from scratch (the image run has its 4x4 patches and width); 300
    # steps, at which benchmarks/video_transfer.py compares it with the same run from scratch.
    config.init_from.path = "workdirs/vit_digits_canvas"
    config.total_steps = 300
    config.lr.warmup_steps = 30

  config.log_every_steps = 100
  config.eval_every_steps = 0
  config.checkpoint.every_steps = 500
  return config
