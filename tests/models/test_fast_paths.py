"""The CPU fast paths of the model code keep the parameter tree and the numerics.

- Self-attention projects q, k and v with one fused matmul (`project_qkv`) while the
  parameters stay the three `query` / `key` / `value` DenseGenerals of the released
  checkpoints: same tree, same initial values, gradients in the same leaves.
- Low-precision compute on the CPU accumulates every matmul in float32
  (`accumulates_in_float32`), which is both XLA:CPU's fast bf16 path and more accurate.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import layers, numerics
from vit_jax.models.options import EncoderOptions


class _ThreeDenseGenerals(nn.Module):
  """The projections as they were before the fusion: three nn.DenseGeneral calls."""
  num_heads: int
  qkv_bias: str

  @nn.compact
  def __call__(self, x):
    head_dim = x.shape[-1] // self.num_heads
    bias = {"qkv": (1, 1, 1), "qv": (1, 0, 1), "none": (0, 0, 0)}[self.qkv_bias]
    return [nn.DenseGeneral((self.num_heads, head_dim), kernel_init=layers.KERNEL_INIT,
                            bias_init=nn.initializers.zeros, use_bias=bool(b), name=name)(x)
            for name, b in zip(("query", "key", "value"), bias)]


@pytest.mark.parametrize("qkv_bias", ["qkv", "qv", "none"])
def test_fused_qkv_has_the_tree_values_and_gradients_of_three_dense_generals(qkv_bias):
  x = jax.random.normal(jax.random.key(1), (2, 7, 12))
  attention = layers.MultiHeadDotProductAttention(
      num_heads=3, options=EncoderOptions(qkv_bias=qkv_bias))
  params = attention.init(jax.random.key(0), x)["params"]  # self-attention: fused
  # The same tree and the same initial draws as three DenseGenerals at the same paths.
  expected = _ThreeDenseGenerals(3, qkv_bias).init(jax.random.key(0), x)["params"]
  projections = {k: v for k, v in params.items() if k != "out"}
  assert jax.tree.structure(projections) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(projections), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)

  # Trained-looking values, so that no bias is zero. `x + 0` is another array object,
  # which takes the unfused path (cross-attention's three projections) on the same input.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape),
                        params)
  fused = lambda p: attention.apply({"params": p}, x)
  separate = lambda p: attention.apply({"params": p}, x, x + 0)
  np.testing.assert_allclose(fused(params), separate(params), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p)))
  grads, grads_ref = jax.grad(loss(fused))(params), jax.grad(loss(separate))(params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  scale = max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(grads_ref))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    w = grads_ref
    for key in path:
      w = w[key.key]
    # float32 rounding only: the sums run in another order
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
    if jax.tree_util.keystr(path) != "['key']['bias']":  # softmax ignores a key bias: 0
      assert float(jnp.max(jnp.abs(g))) > 1e-3 * scale, path  # q, k, v are all reached


def _dots(jaxpr) -> list:
  """Every dot_general equation of a jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn)
    for sub in jax.core.jaxprs_in_params(eqn.params):
      found += _dots(sub)
  return found


def test_a_vit_block_projects_qkv_with_one_matmul():
  model = models.create_model("ViT-Mu_4", num_classes=5)
  x = jnp.zeros((2, 16, 16, 3))
  params = model.init(jax.random.key(0), x)["params"]
  block = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  assert sorted(block) == ["key", "out", "query", "value"]  # the released layout
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x))(params).jaxpr
  width = block["query"]["kernel"].shape[0]
  shapes = [tuple(e.invars[1].aval.shape) for e in _dots(jaxpr)]
  heads, head_dim = block["query"]["kernel"].shape[1:]
  fused = (width, 3, heads, head_dim)
  depth = len([k for k in params["Transformer"] if k.startswith("encoderblock_")])
  assert shapes.count(fused) == depth, shapes
  assert (width, heads, head_dim) not in shapes  # no separate q/k/v projection left


def test_bfloat16_on_the_cpu_accumulates_every_matmul_in_float32():
  assert jax.default_backend() == "cpu"
  model = models.create_model("ViT-Mu_4", num_classes=5, dtype=jnp.bfloat16)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(0), x)["params"]
  params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.key(3), p.shape),
                        params)
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x))(params).jaxpr
  dots = _dots(jaxpr)
  convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  assert dots and convs
  for eqn in dots + convs:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32, eqn  # the accumulation
  # And the result is close to float32 compute (bf16 activations, f32 sums).
  full = models.create_model("ViT-Mu_4", num_classes=5)
  got = model.apply({"params": params}, x)
  want = full.apply({"params": params}, x)
  np.testing.assert_allclose(got, want, atol=0.05 * float(jnp.max(jnp.abs(want))))


def test_float32_programs_are_left_as_they_are():
  assert not numerics.accumulates_in_float32(jnp.float32)
  assert not numerics.accumulates_in_float32(None)
  assert numerics.accumulates_in_float32(jnp.bfloat16)
  assert numerics.linear_kwargs(EncoderOptions()) == {"dtype": jnp.float32,
                                                    "param_dtype": jnp.float32}


@pytest.mark.parametrize("lhs_shape,rhs_shape,dimension_numbers", [
    ((2, 5, 6), (6, 7), (((2,), (0,)), ((), ()))),  # Dense
    ((2, 5, 3, 4), (3, 4, 6), (((2, 3), (0, 1)), ((), ()))),  # the attention's `out`
    ((2, 5, 6), (6, 3, 2, 4), (((2,), (0,)), ((), ()))),  # fused q/k/v
    ((2, 3, 5, 4), (2, 3, 4, 6), (((3,), (2,)), ((0, 1), (0, 1)))),  # weights @ v
    ((2, 3, 5, 4), (2, 3, 6, 4), (((3,), (3,)), ((0, 1), (0, 1)))),  # q @ k^T
])
def test_the_float32_accumulated_dot_has_the_gradient_of_dot_general(lhs_shape, rhs_shape,
                                                                    dimension_numbers):
  lhs = jax.random.normal(jax.random.key(0), lhs_shape)
  rhs = jax.random.normal(jax.random.key(1), rhs_shape)
  ours = lambda a, b: numerics.dot_accumulated_in_float32(a, b, dimension_numbers, jnp.float32)
  plain = lambda a, b: jax.lax.dot_general(a, b, dimension_numbers)
  np.testing.assert_allclose(ours(lhs, rhs), plain(lhs, rhs), rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b)))
  for got, want in zip(jax.grad(loss(ours), (0, 1))(lhs, rhs),
                       jax.grad(loss(plain), (0, 1))(lhs, rhs)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_training_multiplies_bfloat16_into_float32_in_the_backward_pass_too():
  model = models.create_model("ViT-Mu_4", num_classes=5, dtype=jnp.bfloat16)
  x = jnp.zeros((2, 16, 16, 3))
  params = model.init(jax.random.key(0), x)["params"]
  grad = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x)))
  dots = _dots(jax.make_jaxpr(grad)(params).jaxpr)
  # forward (one per matmul) and two per matmul backward, all of them bf16 x bf16 -> f32
  assert len(dots) > 3 * 5
  for eqn in dots:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
