"""Encoder options: the settings that every transformer module of ViT and ViViT shares.

One frozen dataclass, validated once when it is made, held by every module as its
`options` field and passed down whole (model -> encoder -> block -> attention / MLP);
each module reads the fields it needs. A new option is one field here plus its use.

    options = EncoderOptions(dropout_rate=0.1, dtype=jnp.bfloat16)
    model = create_model("ViT-B_16", num_classes=10, dropout_rate=0.1)  # the same, flat
    model = model.clone(scan_layers=True)  # option fields work in clone too

`create_model(name, **kwargs)` and the config's `model.*` keys take these fields flat
(`split_options` sorts them from the module's own fields).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

Dtype = Any

ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn")

# Attention score functions (`attention_score`), for ablations:
#   scaled_dot  q.k / sqrt(hd)                  (Vaswani et al.; the default, no parameters)
#   dot         q.k                             (Luong "dot"; no parameters)
#   bilinear    q^T W k, W [H, hd, hd]           (Luong "general"; param `bilinear`)
#   additive    v^T tanh(q + k), v [H, hd]       (Bahdanau "concat"; param `additive_v`)
#   cosine      tau * cos(q, k), tau [H] learned (param `log_temperature`)
ATTENTION_SCORES = ("scaled_dot", "dot", "bilinear", "additive", "cosine")

# Names accepted for `remat_policy`, mapped to jax.checkpoint_policies.
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": (
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
}


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
  """Options shared by the encoder, its blocks, attention and MLP layers.

  Attributes:
    dropout_rate: dropout after the position embedding, in the MLP and on each
      residual branch (training only).
    attention_dropout_rate: dropout on the attention weights (training only; takes
      the explicit attention path while active).
    stochastic_depth: drop rate of the last block's residual branches; it grows
      linearly from 0 at the first block (per example, training only).
    gelu_approximate: True: tanh GELU, as the released checkpoints were trained;
      False: exact erf, as PyTorch ports use.
    attention_implementation: None (jax's choice on GPU/TPU, explicit head-major
      attention on CPU), "xla" or "cudnn" (`jax.nn.dot_product_attention`).
    attention_score: one of ATTENTION_SCORES.
    sow_attention_weights: store every softmax in the 'intermediates' collection.
    scan_layers: run the blocks under `nn.scan` (parameters stacked on axis 0).
    remat: recompute each block's activations in the backward pass.
    remat_policy: a name in REMAT_POLICIES.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  gelu_approximate: bool = True
  attention_implementation: Optional[str] = None
  attention_score: str = "scaled_dot"
  sow_attention_weights: bool = False
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"Unknown attention implementation {self.attention_implementation!r}; "
                       f"choose one of {ATTENTION_IMPLEMENTATIONS}.")
    if self.attention_score not in ATTENTION_SCORES:
      raise ValueError(f"Unknown attention_score {self.attention_score!r}; "
                       f"choose one of {ATTENTION_SCORES}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat_policy {self.remat_policy!r}; "
                       f"choose one of {sorted(REMAT_POLICIES)}.")
    for name in ("dropout_rate", "attention_dropout_rate", "stochastic_depth"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")

  def replace(self, **changes: Any) -> EncoderOptions:
    """A copy with `changes` (validated again); unknown names are an error."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
      raise TypeError(f"EncoderOptions has no field(s) {unknown}; fields: {list(FIELDS)}.")
    return dataclasses.replace(self, **changes)

  @property
  def remat_policy_fn(self) -> Callable[..., bool]:
    """The `jax.checkpoint` policy named by `remat_policy`."""
    return REMAT_POLICIES[self.remat_policy]


FIELDS = tuple(f.name for f in dataclasses.fields(EncoderOptions))


def split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """Flat keyword arguments -> (EncoderOptions fields, everything else)."""
  options = {k: v for k, v in kwargs.items() if k in FIELDS}
  return options, {k: v for k, v in kwargs.items() if k not in FIELDS}


class OptionsClone:
  """Mixin for modules with an `options: EncoderOptions` field: option fields read and
  clone flat, as the module's own fields do (`model.dropout_rate`,
  `model.clone(scan_layers=True)`); they are stored only in `options`."""

  def __getattr__(self, name: str) -> Any:
    # Only called when normal lookup fails, i.e. for names that are not module fields.
    if name in FIELDS:
      return getattr(self.options, name)
    return super().__getattr__(name)

  def clone(self, **updates: Any):
    changes, updates = split_options(updates)
    if changes:
      updates["options"] = updates.get("options", self.options).replace(**changes)
    return super().clone(**updates)
