"""Evaluators: how a backbone is judged, during training and on its own.

  registry        config.evals: the evaluator types, their options and checks
  backbone        load_backbone(source): model, params, preprocessing of any source
  features        frozen features (pooled, cls, patch mean, last blocks' cls, tokens),
                  extracted exactly over all devices and hosts, cached in the workdir
  classification  the model's own head: top1 / top5 / loss
  knn             DINO's weighted kNN
  linear          DINOv2's linear-probe sweep (learning rates x features at once)
  fewshot         big_vision's few-shot least squares
  attentive       V-JEPA's attentive probe on tokens (images and clips)
  runner          Evaluators: cadence, data, results; the table printed at the end
  cli             python -m vit_jax.evaluate: any source, any evaluator set, no training

JAX-free: `registry` (imported by the config schema). The other modules import JAX.
"""
