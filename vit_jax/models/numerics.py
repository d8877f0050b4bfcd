"""Matmul numerics: low-precision models accumulate in float32 on the CPU.

XLA:CPU multiplies bfloat16 operands into a float32 result with its AMX / avx512_bf16
kernels several times faster than into a bfloat16 result (benchmarks/README.md, 'Library
API, driver and timm'), so on the CPU every Dense, DenseGeneral, attention matmul and
patch convolution of a bfloat16 model sums in float32 and rounds once, forward and
backward (a custom VJP). GPU and TPU programs, and every float32 program, are unchanged.
The layers take these through `linear_kwargs` / `conv_kwargs` and `matmul`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vit_jax.models.options import EncoderOptions


def accumulates_in_float32(dtype: Any) -> bool:
  """Whether matmuls of this compute dtype are written with a float32 result.

  XLA:CPU multiplies bfloat16 operands into a float32 result with its AMX / avx512_bf16
  kernels (1.2-1.5 TFLOP/s on a 2-core Sapphire Rapids VM), but into a bfloat16 result
  at ~220 GFLOP/s, slower than float32's ~290 (benchmarks/README.md, 'Library API,
  driver and timm'). So on the CPU a low-precision model accumulates in float32 and
  rounds once afterwards; GPU and TPU matmuls accumulate in float32 anyway, and there the
  program is left as it was.
  """
  return (dtype is not None and jnp.dtype(dtype).itemsize < 4
          and jax.default_backend() == "cpu")


def _einsum_subscripts(dimension_numbers, lhs_ndim: int, rhs_ndim: int) -> tuple[str, str, str]:
  """lax.dot_general's dimension numbers as einsum subscripts (lhs, rhs, out)."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  letters = iter("abcdefghijklmnopqrstuvwxyz")
  lhs, rhs = [""] * lhs_ndim, [""] * rhs_ndim
  for a, b in [*zip(lhs_batch, rhs_batch), *zip(lhs_contract, rhs_contract)]:
    lhs[a] = rhs[b] = next(letters)
  lhs = [c or next(letters) for c in lhs]
  rhs = [c or next(letters) for c in rhs]
  # dot_general's output: batch dims, then lhs's free dims, then rhs's.
  out = ([lhs[a] for a in lhs_batch]
         + [c for i, c in enumerate(lhs) if i not in (*lhs_batch, *lhs_contract)]
         + [c for i, c in enumerate(rhs) if i not in (*rhs_batch, *rhs_contract)])
  return "".join(lhs), "".join(rhs), "".join(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dot_accumulated_in_float32(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                               out_dtype: Any) -> jax.Array:
  """lax.dot_general summed in float32 and rounded once to `out_dtype`.

  The backward pass multiplies the same way (low-precision cotangent and operands into a
  float32 result): JAX's own transpose of a float32-result dot would multiply the float32
  cotangent with a bfloat16 operand, which XLA:CPU runs as a float32 matmul.
  """
  return jax.lax.dot_general(lhs, rhs, dimension_numbers,
                             preferred_element_type=jnp.float32).astype(out_dtype)


def _dot_accumulated_fwd(lhs, rhs, dimension_numbers, out_dtype):
  return dot_accumulated_in_float32(lhs, rhs, dimension_numbers, out_dtype), (lhs, rhs)


def _dot_accumulated_bwd(dimension_numbers, out_dtype, residuals, g):
  lhs, rhs = residuals
  sub_l, sub_r, sub_o = _einsum_subscripts(dimension_numbers, lhs.ndim, rhs.ndim)
  g = g.astype(jnp.result_type(lhs, rhs))
  f32 = jnp.float32
  return (jnp.einsum(f"{sub_o},{sub_r}->{sub_l}", g, rhs, preferred_element_type=f32
                     ).astype(lhs.dtype),
          jnp.einsum(f"{sub_l},{sub_o}->{sub_r}", lhs, g, preferred_element_type=f32
                     ).astype(rhs.dtype))


dot_accumulated_in_float32.defvjp(_dot_accumulated_fwd, _dot_accumulated_bwd)


def matmul(a: jax.Array, b: jax.Array, result_dtype: Any = None,
           transpose_b: bool = False) -> jax.Array:
  """a @ b (a @ b^T with `transpose_b`) over equal leading (batch) dims.

  Accumulated in float32 for low-precision operands on the CPU (`accumulates_in_float32`);
  returned in `result_dtype` (default: the operands').
  """
  dtype = jnp.result_type(a, b)
  if not accumulates_in_float32(dtype):
    return (a @ (jnp.swapaxes(b, -1, -2) if transpose_b else b)).astype(result_dtype or dtype)
  batch = tuple(range(a.ndim - 2))
  # a @ b^T contracts the last dims of both: XLA:CPU runs that bfloat16 batched matmul
  # 1.6-2.9x faster than the same product with b transposed first.
  contract = (a.ndim - 1,), (b.ndim - 1 if transpose_b else b.ndim - 2,)
  return dot_accumulated_in_float32(a, b, (contract, (batch, batch)),
                                    jnp.dtype(result_dtype or dtype))


class Float32Accumulation:
  """A Flax `dot_general_cls`: `dot_accumulated_in_float32`, in the operands' dtype.

  (`precision` is not passed on: it is for TPUs and GPUs, and this runs on the CPU only.)
  """

  def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    del precision
    return dot_accumulated_in_float32(
        lhs, rhs, dimension_numbers, jnp.dtype(preferred_element_type or jnp.result_type(lhs, rhs)))


class Float32AccumulationConv:
  """A Flax `conv_general_dilated_cls`, as Float32Accumulation for convolutions."""

  def __call__(self, lhs, rhs, *args, preferred_element_type=None, **kwargs):
    out = jax.lax.conv_general_dilated(lhs, rhs, *args, preferred_element_type=jnp.float32,
                                       **kwargs)
    return out.astype(preferred_element_type or jnp.result_type(lhs, rhs))


def linear_kwargs(options: EncoderOptions) -> dict[str, Any]:
  """dtype, param_dtype and the matmul of every Dense / DenseGeneral of a model."""
  extra = ({"dot_general_cls": Float32Accumulation}
           if accumulates_in_float32(options.dtype) else {})
  return dict(dtype=options.dtype, param_dtype=options.param_dtype, **extra)


def conv_kwargs(options: EncoderOptions) -> dict[str, Any]:
  """linear_kwargs for the patch and tubelet embeddings' nn.Conv."""
  extra = ({"conv_general_dilated_cls": Float32AccumulationConv}
           if accumulates_in_float32(options.dtype) else {})
  return dict(dtype=options.dtype, param_dtype=options.param_dtype, **extra)
