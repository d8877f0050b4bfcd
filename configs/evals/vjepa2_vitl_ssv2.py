"""V-JEPA 2 ViT-L/16 protocol: an attentive probe on frozen clip tokens, Something-Something v2.

    python -m vit_jax.evaluate --config configs/evals/vjepa2_vitl_ssv2.py \
        --workdir workdirs/vjepa2_ssv2          # source: the released ViT-L encoder
    python -m vit_jax.evaluate --config configs/evals/vjepa2_vitl_ssv2.py:released \
        --workdir workdirs/vjepa2_ssv2_released # the released probe's own head
    python -m vit_jax.evaluate --config configs/evals/vjepa2_vitl_ssv2.py:smoke \
        --workdir workdirs/vjepa2_smoke     # runs here: see below

Published (Assran et al. 2025, "V-JEPA 2", arXiv 2506.09985; facebookresearch/vjepa2
README, "Evaluation Attentive Probes"): ViT-L/16 at 256 px, SSv2 attentive probe 73.7%
top-1 (16 frames x 2 clips x 3 crops). `:released` evaluates that probe as released
(facebook/vjepa2-vitl-fpc16-256-ssv2, read with its attentive pooler and head by
vit_jax.checkpoint.hf_vjepa2) with the model's own head: expect 73.7%.

Protocol, after vjepa2's configs/eval/vitl/ssv2.yaml: 16 frames every 4, 256 px, 2
temporal clips x 3 spatial crops per test video (their logits averaged), a probe of 16
heads with 4 blocks (3 self-attention blocks over the frozen tokens, then the learned
query's cross-attention), AdamW, 20 epochs. V-JEPA 2 sweeps 5 learning rates x 4 weight
decays in parallel and reports the best; this config runs one point of that grid
(lr 1e-3, wd 0.01); sweep it with --config.evals.probe.learning_rate.

The probe trains on the fly (mode="on_the_fly"): each augmented batch of 256 training
clips goes through the frozen encoder and straight into the probe's AdamW step, and the
validation clips are streamed batch by batch; nothing dataset-sized is held (cached
tokens would be 169k clips x 2048 tokens x 1024 floats, terabytes). 20 epochs of the
168,913 training clips at batch 256 are 20 x 660 = 13,200 steps (no warmup, cosine).

Source: the released encoder `hf-hub:facebook/vjepa2-vitl-fpc64-256` (VJEPA2Model, 3-D
RoPE, no class token; its predictor is left out), whose normed tokens the probe reads;
pass --source for another (a workdir, a checkpoint load_pretrained reads). Needs SSv2 as
DMVR shards or a manifest (`dmvr:/path` or `manifest:/path`, 174 classes).

`:smoke` runs the same evaluator here in about a minute: a randomly initialised
V-JEPA 2-Mu (`random:VJEPA2-Mu_4x2`: the same 3-D RoPE encoder, width 32) on the bundled
`moving_digits/tiny`, 2 test clips per video, a 1-block probe trained on the fly for 50
batches of 16 (10 epochs of its 80 clips).
"""

import ml_collections

from vit_jax.evals import registry

SSV2_TRAIN_CLIPS = 168_913
SSV2_STEPS_PER_EPOCH = -(-SSV2_TRAIN_CLIPS // 256)  # 660 batches of 256


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "released", "smoke"):
    raise ValueError(f"Config argument {arg!r}: use nothing, 'released' or 'smoke'.")
  c = registry.standalone_config()
  c.source = "hf-hub:facebook/vjepa2-vitl-fpc64-256"
  c.data.dataset = "dmvr:/path/to/ssv2"
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.image_size = 256
  c.data.num_frames = 16
  c.data.stride = 4
  c.data.num_test_clips = 2
  c.data.num_test_crops = 3
  c.data.flip = False  # SSv2 has left/right classes
  c.batch_size = 32
  c.evals.probe = dict(type="attentive", mode="on_the_fly", num_queries=1, num_heads=16,
                       depth=3, steps=20 * SSV2_STEPS_PER_EPOCH, batch_size_probe=256,
                       learning_rate=1e-3, weight_decay=0.01, warmup_steps=0)
  if arg == "released":  # the released probe (pooler + head) on the same clips
    c.source = "hf-hub:facebook/vjepa2-vitl-fpc16-256-ssv2"
    c.evals = ml_collections.ConfigDict({"classification": dict(type="classification")})
  if arg == "smoke":
    c.source = "random:VJEPA2-Mu_4x2"
    c.data.dataset = "moving_digits/tiny"
    c.data.eval_split = "test"
    c.data.image_size = 16
    c.data.num_frames = 8
    c.data.stride = 2
    c.data.num_test_crops = 1
    c.batch_size = 16
    c.evals.probe.update(num_heads=2, depth=1, steps=50, batch_size_probe=16)
  return c
