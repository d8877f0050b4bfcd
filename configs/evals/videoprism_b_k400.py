"""VideoPrism-B frozen-backbone protocol: an attentive probe on Kinetics-400 (VideoGLUE).

    python -m vit_jax.evaluate --config configs/evals/videoprism_b_k400.py \
        --config.data.dataset=dmvr:/path/to/kinetics400 \
        --workdir workdirs/videoprism_b_k400    # source: the released VideoPrism-B
    python -m vit_jax.evaluate --config configs/evals/videoprism_b_k400.py:smoke \
        --workdir workdirs/videoprism_smoke     # runs here: see below

Published (google-deepmind/videoprism README, "Results with frozen backbones", the
VideoGLUE table): VideoPrism-B (public, the released weights) K400 82.9% top-1; the
paper's VideoPrism-B (Zhao et al. 2024, arXiv 2402.13217), which was not released,
84.2%. Expect about 82.9% from this config, but it has not been run at that scale here,
and the probe differs from VideoGLUE's head (below).

Source: `hf-hub:google/videoprism-base-f16r288` (vit_jax.families.videoprism, read by
vit_jax.checkpoint.hf_videoprism): the factorised encoder whose 16 x 16 tokens per frame
(the temporal encoder's outputs, 4096 per 16-frame clip, width 768) the probe reads. The
released models take 288 x 288 frames with RGB in [0, 1]; VideoPrism-B was trained with
16 frames (the README); those come from the checkpoint's preprocessing. Pass --source for
another. Needs K400 as DMVR shards, a manifest or a folder (400 classes; VideoGLUE's
train split has 235,693 clips).

Protocol, after VideoGLUE (Yuan et al., arXiv 2307.03166; tensorflow/models
official/projects/videoglue/configs/yaml/vmae/frozen/vc_vmae_vit3d_k400.yaml): the
backbone frozen; an attention-pooling head (`classifier_type: pooler`, 12 heads, hidden
768) with dropout 0.5; label smoothing 0.1; AdamW, lr 1e-4 with 4,600 linear warmup steps
and a cosine decay, weight decay 1e-5, batch 256, 138,101 steps (150 epochs); clips of 16
frames every 4 frames (224 px there, VideoPrism's 288 here); evaluation on 4 temporal
clips x 3 spatial crops per video, their logits averaged. Here: one learned query
cross-attending with 12 heads (depth 0), dropout 0.5 on the pooled feature before the
classifier, label smoothing 0.1, the same optimiser numbers, trained on the fly
(mode="on_the_fly": each augmented batch of 256 clips goes through the frozen encoder
into the probe's step; K400's tokens, 240k clips x 4096 x 768 floats, are never held).

Where this differs from VideoGLUE's head, and may move the number:
  - The probe is V-JEPA's (vit_jax.evals.attentive): the query's cross-attention is
    residual, followed by an MLP block and a LayerNorm; VideoGLUE's pooler is one
    cross-attention of a pooler token over LayerNorm'd tokens, straight into dropout and
    the classifier.
  - AdamW decays every probe parameter; VideoGLUE excludes LayerNorm and biases and adds
    an L2 of 1.5e-5 on the classifier's kernel.
  - optax's warmup + cosine decays over the 133,501 steps after warmup; Model Garden's
    cosine runs over all 138,101 steps with the warmup laid over its start.
  - Training augmentation is config.data's default (Inception-style crop, flip), not
    checked against VideoGLUE's input pipeline.

`:smoke` runs the same evaluator here in about half a minute: a randomly initialised
VideoPrism-Mu (`random:VideoPrism-Mu_4`: the same factorised encoder, width 32) on the
bundled `moving_digits/tiny`, 8 frames at 16 px, 2 test clips per video, the probe
trained on the fly for 50 batches of 16; top-1 near chance (5%, 20 classes).
"""

import ml_collections

from vit_jax.evals import registry

ARGS = ("", "smoke")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ARGS:
    raise ValueError(f"Config argument {arg!r}: use nothing or 'smoke'.")
  c = registry.standalone_config()
  c.source = "hf-hub:google/videoprism-base-f16r288"
  c.data.dataset = "dmvr:/path/to/kinetics400"
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.image_size = 288
  c.data.num_frames = 16
  c.data.stride = 4
  c.data.num_test_clips = 4
  c.data.num_test_crops = 3
  c.batch_size = 16  # test videos per batch (x 12 views), VideoGLUE's validation batch
  c.evals.probe = dict(type="attentive", mode="on_the_fly", num_queries=1, num_heads=12,
                       depth=0, steps=138_101, warmup_steps=4_600, batch_size_probe=256,
                       learning_rate=1e-4, weight_decay=1e-5, dropout_rate=0.5,
                       label_smoothing=0.1)
  if arg == "smoke":
    c.source = "random:VideoPrism-Mu_4"
    c.data.dataset = "moving_digits/tiny"
    c.data.eval_split = "test"
    c.data.image_size = 16
    c.data.num_frames = 8
    c.data.stride = 2
    c.data.num_test_clips = 2
    c.data.num_test_crops = 1
    c.data.flip = False  # moving_digits' classes include the direction of motion
    c.batch_size = 16
    c.evals.probe.update(num_heads=2, steps=50, warmup_steps=5, batch_size_probe=16,
                         learning_rate=1e-3)
  return c
