"""Attentive pooling: learned query tokens cross-attend to a model's tokens (V-JEPA 2).

V-JEPA 2's classifiers (transformers `VJEPA2AttentivePooler`, the attentive probe of
Assran et al. 2025) pool the encoder's tokens in two stages:

  tokens [B, L, D]
    -> `num_layers` pre-LN self-attention blocks over the tokens     [B, L, D]
    -> queries [1, Q, D] (tiled over B) + CrossAttention(queries, LN(tokens))
                                         (no output projection)      [B, Q, D]
    -> + MLP(LN(.))                                                  [B, Q, D]
    -> [B, D] for one query (the classifier reads it), else [B, Q, D]

Parameters (under the model's `pooler`):
  encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}
                                              the ViT block (layers.Encoder1DBlock)
  query_tokens [1, Q, D]
  kv_norm/{scale, bias} [D]                   LayerNorm of the tokens the queries read
  cross_attention/{query, key, value}/{kernel [D, H, hd], bias [H, hd]}
  mlp_norm/{scale, bias}, mlp/{Dense_0, Dense_1}

The attention layers are the encoder's (`layers.MultiHeadDotProductAttention`), so with
`sow_attention_weights` every softmax is stored (inspection.attention_weights): the
blocks' as `pooler/encoderblock_{i}/MultiHeadDotProductAttention_0` [B, H, L, L], the
queries' as `pooler/cross_attention` [B, H, Q, L].

`vit_jax.evals.attentive.AttentiveProbe` is the probe this project trains from scratch on
cached tokens (with an output projection, a final LayerNorm and several queries averaged);
this module is the pretrained pooler a checkpoint carries.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import layers
from vit_jax.models.options import EncoderOptions, OptionsClone

# V-JEPA 2's probe: 3 self-attention blocks before the cross-attention (transformers'
# `num_pooler_layers` default; vjepa2's AttentiveClassifier with depth=4).
DEFAULT_POOLER_LAYERS = 3


class CrossAttention(layers.MultiHeadDotProductAttention):
  """Queries [B, Q, D] attend to tokens [B, L, D] -> [B, Q, D], with no output projection
  (the heads' outputs [B, Q, H, hd] are concatenated to [B, Q, H*hd]); H * hd = D."""

  @nn.compact
  def __call__(self, queries: jax.Array, tokens: jax.Array,
               deterministic: bool = True) -> jax.Array:
    width = queries.shape[-1]
    head_dim = self.head_dim(width)
    query = self.project("query", queries, head_dim)  # [B, Q, H, hd]
    key = self.project("key", tokens, head_dim)  # [B, L, H, hd]
    value = self.project("value", tokens, head_dim)  # [B, L, H, hd]
    out = self.attend(query, key, value, deterministic)  # [B, Q, H, hd]
    return out.reshape(out.shape[:-2] + (width,))  # -> [B, Q, D]


def pooler_options(options: EncoderOptions) -> EncoderOptions:
  """The encoder's options as the pooler uses them: plain scaled dot-product attention
  with all three biases, no RoPE / QK-norm / LayerScale, no dropout but the attention's
  (transformers' pooler has none); dtypes, epsilon, GELU form and sowing are kept."""
  return options.replace(
      dropout_rate=0.0, stochastic_depth=0.0, attention_score="scaled_dot", qkv_bias="qkv",
      qk_norm=False, rope=None, rope_temperature=None, rope_reference_grid=None,
      layer_scale=None, mlp_inner_norm=False, scan_layers=False, remat=False)


class AttentivePooler(OptionsClone, nn.Module):
  """Tokens [B, L, D] -> [B, D] (one query) or [B, Q, D]; see the module docstring.

  Attributes:
    num_heads: heads of every attention layer (the encoder's).
    mlp_dim: hidden width of every MLP (V-JEPA 2: 4 D, whatever the encoder's ratio).
    num_layers: self-attention blocks before the cross-attention.
    num_queries: learned query tokens.
    options: the encoder's EncoderOptions (pooler_options adapts them).
  """
  num_heads: int
  mlp_dim: int
  num_layers: int = DEFAULT_POOLER_LAYERS
  num_queries: int = 1
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    o = pooler_options(self.options)
    batch, _, width = x.shape
    for i in range(self.num_layers):
      x, _ = layers.Encoder1DBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads, options=o,
                                   name=f"encoderblock_{i}")(x, 0.0, deterministic)
    query = self.param("query_tokens", nn.initializers.truncated_normal(0.02),
                       (1, self.num_queries, width), o.param_dtype)
    queries = jnp.tile(query.astype(x.dtype), [batch, 1, 1])  # [B, Q, D]
    tokens = layers.layer_norm(o, name="kv_norm")(x)
    queries = queries + CrossAttention(num_heads=self.num_heads, options=o,
                                       name="cross_attention")(queries, tokens, deterministic)
    y = layers.layer_norm(o, name="mlp_norm")(queries)
    queries = queries + layers.MlpBlock(mlp_dim=self.mlp_dim, options=o, name="mlp")(
        y, deterministic=deterministic)
    return queries[:, 0] if self.num_queries == 1 else queries


def mlp_dim_of(hidden_size: int, mlp_dim: Optional[int]) -> int:
  """The pooler's MLP width: `mlp_dim`, else V-JEPA 2's 4 * hidden_size."""
  return mlp_dim or 4 * hidden_size
