"""The ViViT paper's factorised-encoder recipes (Arnab et al., 2021; Scenic's configs).

    python -m vit_jax.main --config configs/vivit_paper.py:DATASET[,SIZE] --workdir DIR \
        --config.data.dataset=folder:/path/to/videos \
        --config.init_from.path=/path/to/imagenet21k/ViT-{B,L}_16.npz

DATASET: k400 | k600 | ssv2 | epic; SIZE: B or L (default L), i.e. ViViT-B/16x2 or
ViViT-L/16x2 factorised encoder on 32-frame clips, initialised from an ImageNet-21k
ViT (any format vit_jax.checkpoint reads, e.g. the released `ViT-L_16.npz`; the
tubelet kernel by central-frame inflation, the position embeddings resized to the
crop's grid and tiled, the temporal encoder random). Data: a folder
root/{train,val}/<class>/<video file> (`folder:/path`, the default path below is a
placeholder) or a prepared TFDS video dataset (`--config.data.dataset=ucf101`, with
`--config.data.eval_split=test`).

Published test top-1 (docs/published_results.md, 'ViViT': the paper and Scenic's model
zoo; 4 clips x 3 crops; what these recipes aim at, not measured here):
  k400,B  78.4    k400,L  80.3    k600,L  81.6    ssv2,L  65.4    epic,L  44.0 (action)
  (B on k600/ssv2/epic: no published number, and no Scenic config: L's settings are used.)

Hardware: Scenic trained these on TPU-v3 pods (32-64 cores); batch 64 of 32-frame
224-256 px clips needs accelerators with >= 32 GB each (L/16x2 FE: ~2 TFLOPs per
training clip). They do not run on a CPU; a one-step smoke run on a tiny folder works
with `--config.total_steps=1 --config.lr.warmup_steps=0 --config.batch_size=8` on 8
devices.

Schedule as Scenic's configs: SGD momentum 0.9, cosine decay after a 2.5-epoch linear
warmup, batch 64, gradient clipping at 1.0, no weight decay; K400/K600 30 epochs,
stride 2, no label smoothing; SSv2 35 epochs and Epic-Kitchens 50 epochs, stride 1,
label smoothing, mixup and stochastic depth. Epochs are converted to steps with the
train-set sizes Scenic used (set `total_steps` and `lr.warmup_steps` for your copy).

Augmentation as Scenic's configs (`data.augment`, one draw per clip for all its frames;
vit_jax/data/video_augment.py): K400/K600 DMVR's colour augmentation with probability
0.8 and colour drop 0.1 (`dmvr_color(0.8, 0.1)`); SSv2 RandAugment n=2 m=20, Epic-Kitchens
n=2 m=15 on Scenic's video op set (`video_randaug(2, 20)` / `(2, 15)`: 11 photometric ops
and Cutout, no geometric ops; one in 12 layers does nothing), no colour augmentation
(Scenic's RandAugment takes precedence over it). Data as Scenic reads it: DMVR TFRecords
(`--config.data.dataset=dmvr:/path` with `--config.data.train_split=<prefix>@<shards>`,
e.g. something-something-v2-train.rgb.tfrecord@128, indexed once with
`python -m vit_jax.data.dmvr_writer --index /path`), or a folder or manifest of videos.

Differences from the paper, stated: RandAugment's Equalize, AutoContrast and Contrast
take their statistics per frame (Scenic's per clip: it reshapes the clip to one tall
image); Epic-Kitchens is trained with one
softmax over the action classes of the folder/TFDS labels, while the paper predicts
verb and noun with two heads and scores action = (verb, noun); scale jitter is
expressed relative to the crop (Scenic's shorter side 256 * [0.9, 1.33] for a 224 crop
is 224 * [1.03, 1.52] here).
"""

import ml_collections

from vit_jax.driver.config import base_config

# name: (train-set size, epochs, lr, stride, crop, eval resize, label smoothing,
#        mixup alpha, stochastic depth, temporal layers of L, data.augment) from Scenic's
#        ViViT configs (augmentation_params: do_color_augment / do_rand_augment).
_DATASETS = {
    "k400": dict(train_size=214_834, epochs=30, lr={"B": 0.05, "L": 0.1},
                 stride=2, crop=224, resize=256, label_smoothing=0.0, mixup=0.0,
                 stochastic_depth=0.0, temporal_layers_l=24,
                 augment="dmvr_color(0.8, 0.1)"),
    "k600": dict(train_size=363_213, epochs=30, lr={"B": 0.05, "L": 0.05},
                 stride=2, crop=224, resize=256, label_smoothing=0.0, mixup=0.0,
                 stochastic_depth=0.0, temporal_layers_l=24,
                 augment="dmvr_color(0.8, 0.1)"),
    "ssv2": dict(train_size=168_913, epochs=35, lr={"B": 0.4, "L": 0.4},
                 stride=1, crop=256, resize=288, label_smoothing=0.3, mixup=0.3,
                 stochastic_depth=0.3, temporal_layers_l=4,
                 augment="video_randaug(2, 20)"),
    "epic": dict(train_size=67_217, epochs=50, lr={"B": 0.5, "L": 0.5},
                 stride=1, crop=224, resize=256, label_smoothing=0.2, mixup=0.1,
                 stochastic_depth=0.2, temporal_layers_l=4,
                 augment="video_randaug(2, 15)"),
}
_DEFAULT_FOLDERS = {"k400": "data/kinetics400", "k600": "data/kinetics600",
                    "ssv2": "data/something_something_v2", "epic": "data/epic_kitchens"}
BATCH_SIZE = 64
WARMUP_EPOCHS = 2.5
NUM_FRAMES = 32


def get_config(arg: str = "k400,L") -> ml_collections.ConfigDict:
  name, *rest = arg.split(",")
  size = rest[0] if rest else "L"
  if name not in _DATASETS or size not in ("B", "L") or len(rest) > 1:
    raise ValueError(f"Config argument {arg!r}: use DATASET[,SIZE] with DATASET one of "
                     f"{sorted(_DATASETS)} and SIZE B or L.")
  d = _DATASETS[name]
  config = base_config()
  config.model_name = f"ViViT-{size}_16x2"
  config.model.variant = "factorised_encoder"
  config.model.classifier = "token"
  # Scenic's B FE and the SSv2/Epic L FE have 4 temporal layers; its K400/K600 L FE 24.
  config.model.temporal_encoder_layers = 4 if size == "B" else d["temporal_layers_l"]
  config.model.stochastic_depth = d["stochastic_depth"]

  config.data.dataset = f"folder:{_DEFAULT_FOLDERS[name]}"
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.num_frames = NUM_FRAMES
  config.data.stride = d["stride"]
  config.data.image_size = d["crop"]
  config.data.resize_small = d["resize"]
  config.data.scale_jitter = (round(0.9 * d["resize"] / d["crop"], 3),
                              round(1.33 * d["resize"] / d["crop"], 3))
  config.data.augment = d["augment"]
  config.data.flip = name != "ssv2"  # SSv2 has left/right classes ("from left to right")
  config.data.num_test_clips = 4
  config.data.num_test_crops = 3

  steps_per_epoch = d["train_size"] // BATCH_SIZE
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = BATCH_SIZE
  config.total_steps = d["epochs"] * steps_per_epoch
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 0.0
  config.lr.base = d["lr"][size]
  config.lr.schedule = "cosine"
  config.lr.warmup_steps = int(WARMUP_EPOCHS * steps_per_epoch)
  config.grad_clip_norm = 1.0
  config.label_smoothing = d["label_smoothing"]
  config.mixup.mixup_alpha = d["mixup"]

  config.init_from.path = f"imagenet21k/ViT-{size}_16.npz"
  config.init_from.kernel_init_method = "central_frame"
  config.init_from.temporal_init = "random"

  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch  # Scenic's log_test_epochs = 5
  config.checkpoint.every_steps = 500
  return config
