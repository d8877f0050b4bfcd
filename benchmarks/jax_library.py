"""The train step and forward a library user writes, shared by the comparison scripts.

create_model's module, model.apply, optax.adamw (lr 1e-3) and jax.jit, nothing of the
driver: timm_compare.py (images) and video_compare.py (clips) time this same program, so
their "ours" columns mean the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax


class Calls(NamedTuple):
  """step(): one AdamW step on (inputs [B, ...], labels [B]) with dropout on, updating the
  state it holds; returns the loss. infer(): the forward on infer_inputs with the current
  params; returns the logits. Both return what jax.block_until_ready waits on (for
  timing.seconds_per_call). lowered(): the train step lowered for its inputs (XLA's cost
  analysis)."""
  step: Callable[[], Any]
  infer: Callable[[], Any]
  lowered: Callable[[], Any]


def train_and_infer(model: Any, params: Any, inputs: Any, labels: Any,
                    infer_inputs: Any) -> Calls:
  """The jitted calls of `model` with `params` on these inputs (see Calls)."""
  tx = optax.adamw(1e-3)

  def loss_fn(params, x, y, rng):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train_step(params, opt_state, x, y, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  forward = jax.jit(lambda params, x: model.apply({"params": params}, x))
  state = [params, tx.init(params)]
  rng = jax.random.key(1)

  def step():
    state[0], state[1], loss = train_step(state[0], state[1], inputs, labels, rng)
    return loss

  return Calls(step, lambda: forward(state[0], infer_inputs),
               lambda: train_step.lower(*state, inputs, labels, rng))
