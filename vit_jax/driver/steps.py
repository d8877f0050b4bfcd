"""The jitted computations: train step (with gradient accumulation) and eval step.

Both are pure functions of (state, batch); `train.py` jits them over the mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_jax.data import mixing, native


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the config.

  `rng` is the raw key data (uint32) so Orbax stores it as a plain array; the
  per-step key is fold_in(rng, step), which makes a resumed run draw the same
  dropout masks as an uninterrupted one.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None  # only with config.ema_decay > 0

  @property
  def eval_params(self) -> Any:
    """What evaluation scores: the EMA of the parameters when the run keeps one."""
    return self.params if self.ema_params is None else self.ema_params


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy: logits [B, C], soft targets [B, C] -> [B]."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, config: Any,
                    num_classes: int) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Builds `train_step(state, batch) -> (state, metrics)`.

  batch: {"image": [B, ...], "label": int [B]}, or a packed batch of native-resolution
  images (data/native.py: patches [R, L, ...], label and mask [R, k]): the loss is then
  the mean over the images of the batch, padding slots weighted 0. With accum_steps = A
  the batch (its rows) is split into A micro-batches whose gradients are combined before
  a single update: the same update as the full batch (up to float summation order).
  """
  accum = config.accum_steps
  mix = config.mixup

  def loss_fn(params, images, targets, rng):
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return jnp.mean(cross_entropy(logits, targets))

  def packed_loss_fn(params, inputs, targets, weights, total, rng):
    logits = model.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})
    # [R, k, C] -> [R, k]; divided by the batch's image count, so micro-batches add up.
    return jnp.sum(cross_entropy(logits, targets) * weights) / total

  def packed_train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    _, dropout_rng = jax.random.split(step_rng)
    inputs = native.packed_patches(batch)
    weights = batch["mask"].astype(jnp.float32)  # [R, k]
    targets = jax.nn.one_hot(batch["label"], num_classes)  # [R, k, C]
    if config.label_smoothing:
      targets = optax.smooth_labels(targets, config.label_smoothing)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    grad_fn = jax.value_and_grad(packed_loss_fn)
    if accum == 1:
      loss, grads = grad_fn(state.params, inputs, targets, weights, total, dropout_rng)
    else:
      # Rows [R, ...] -> [A, R/A, ...], every A-th row, as for images.
      split = lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1)
      micro = (jax.tree.map(split, inputs), split(targets), split(weights),
               jax.random.split(dropout_rng, accum))

      def body(carry, xs):
        loss_sum, grad_sum = carry
        inputs_i, targets_i, weights_i, rng_i = xs
        loss_i, grads_i = grad_fn(state.params, inputs_i, targets_i, weights_i, total, rng_i)
        return (loss_sum + loss_i, jax.tree.map(jnp.add, grad_sum, grads_i)), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (loss, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
    return update(state, loss, grads)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    if native.is_packed(batch):
      return packed_train_step(state, batch)
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    mix_rng, dropout_rng = jax.random.split(step_rng)
    images = batch["image"]
    targets = jax.nn.one_hot(batch["label"], num_classes)
    if config.label_smoothing:
      targets = optax.smooth_labels(targets, config.label_smoothing)
    if mix.mixup_alpha or mix.cutmix_alpha:
      images, targets = mixing.mix(mix_rng, images, targets, mixup_alpha=mix.mixup_alpha,
                                   cutmix_alpha=mix.cutmix_alpha, switch_prob=mix.switch_prob)

    grad_fn = jax.value_and_grad(loss_fn)
    if accum == 1:
      loss, grads = grad_fn(state.params, images, targets, dropout_rng)
    else:
      # [B, ...] -> [A, B/A, ...] taking every A-th example, so each micro-batch
      # stays spread over all devices instead of living on B/A of them.
      split = lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1)
      micro = (split(images), split(targets), jax.random.split(dropout_rng, accum))

      def body(carry, xs):
        loss_sum, grad_sum = carry
        loss_i, grads_i = grad_fn(state.params, *xs)
        return (loss_sum + loss_i, jax.tree.map(jnp.add, grad_sum, grads_i)), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (loss, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
      loss, grads = loss / accum, jax.tree.map(lambda g: g / accum, grads)
    return update(state, loss, grads)

  def update(state: TrainState, loss: jax.Array, grads: Any) -> tuple[TrainState, dict]:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      d = config.ema_decay
      ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "param_norm": optax.global_norm(params)}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, num_classes: int) -> Callable[[Any, dict], dict]:
  """Builds `eval_step(params, batch) -> sums` over the valid (mask) examples.

  batch["image"] is [B, ...] or, for multi-view video evaluation, [B, V, ...]:
  the V views' logits are averaged per example before scoring.
  """

  def eval_step(params: Any, batch: dict) -> dict:
    if native.is_packed(batch):
      # Per image slot: logits [R, k, C] -> [R * k, C], label and mask [R, k] -> [R * k].
      logits = model.apply({"params": params}, native.packed_patches(batch))
      return scores(logits.reshape(-1, logits.shape[-1]), batch["label"].reshape(-1),
                    batch["mask"].reshape(-1))
    images, labels, mask = batch["image"], batch["label"], batch["mask"]
    if images.ndim == 6:  # [B, V, T, H, W, C]
      b, v = images.shape[:2]
      logits = model.apply({"params": params}, images.reshape((b * v,) + images.shape[2:]))
      logits = logits.reshape(b, v, -1).mean(axis=1)
    else:
      logits = model.apply({"params": params}, images)
    return scores(logits, labels, mask)

  def scores(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict:
    mask = mask.astype(jnp.float32)
    loss = cross_entropy(logits, jax.nn.one_hot(labels, num_classes))
    top5 = jax.lax.top_k(logits, min(5, num_classes))[1]
    return {
        "loss": jnp.sum(loss * mask),
        "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "num_examples": jnp.sum(mask),
    }

  return eval_step
