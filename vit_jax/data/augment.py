"""Per-image augmentation ops in plain TensorFlow (the RandAugment op set and friends).

Shapes and values: every op takes `image` uint8 or float32 [H, W, 3] or a stack of
frames [T, H, W, 3] with pixels in [0, 255], and returns the same shape and dtype
(uint8 results are rounded, float results are clipped to [0, 255]). A stack of
frames gets exactly the same transformation on every frame (one angle, one offset,
one box); statistics that PIL computes per image (Equalize's histogram,
AutoContrast's range, Contrast's mean) are computed per frame.

Randomness: ops whose result is random take a `seed` of shape [2] and draw only
through `tf.random.stateless_*`, so the output depends on (image, args, seed) alone;
a video calls an op once on its [T, H, W, 3] clip to transform every frame alike.

The deterministic ops take their argument in the op's own units (degrees, pixels,
blend factor, bits); `vit_jax.data.randaugment` maps a RandAugment magnitude to
these units (docs/augmentation.md lists each mapping and its source). The pixel ops
follow PIL (`ImageOps`, `ImageEnhance`), which both timm and big_vision's TensorFlow
port imitate; geometric ops use the output -> input mapping of PIL's `Image.transform`
with bilinear sampling, and fill uncovered pixels with `fill` (one value or one per
channel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# tf.data runs these on CPU; keep TensorFlow away from any accelerator JAX uses.
tf.config.set_visible_devices([], "GPU")

Fill = float | Sequence[float]

# PIL's "L" conversion (ITU-R 601-2 luma), also torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------
# Helpers: dtype round trip and [..., H, W, 3] <-> [N, H, W, 3].
# ----------------------------------------------------------------------------------------


def _to_float(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(image, tf.float32)


def _like(result: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
  """float32 result -> image's dtype: clipped to [0, 255], rounded for uint8."""
  result = tf.clip_by_value(result, 0.0, 255.0)
  if image.dtype == tf.uint8:
    return tf.cast(tf.round(result), tf.uint8)
  return tf.cast(result, image.dtype)


def _batched(image: tf.Tensor) -> tf.Tensor:
  """[..., H, W, C] -> [N, H, W, C]."""
  shape = tf.shape(image)
  return tf.reshape(image, tf.concat([[-1], shape[-3:]], 0))


def _unbatched(batch: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
  out = tf.reshape(batch, tf.shape(image))
  out.set_shape(image.shape)
  return out


def _quantized(image: tf.Tensor) -> tf.Tensor:
  """Pixels as int32 in [0, 255] (float input is rounded)."""
  if image.dtype == tf.uint8:
    return tf.cast(image, tf.int32)
  return tf.cast(tf.round(tf.clip_by_value(_to_float(image), 0.0, 255.0)), tf.int32)


def grayscale_of(image: tf.Tensor) -> tf.Tensor:
  """float32 luma [..., H, W, 1] of [..., H, W, 3] (PIL's "L" weights)."""
  return tf.reduce_sum(_to_float(image) * tf.constant(_LUMA, tf.float32), -1, keepdims=True)


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """PIL ImageEnhance: degenerate + factor * (image - degenerate); 1 is the identity,
  0 the degenerate image, > 1 extrapolates (then clipped). float32 out."""
  degenerate = _to_float(degenerate)
  return degenerate + tf.cast(factor, tf.float32) * (_to_float(image) - degenerate)


# ----------------------------------------------------------------------------------------
# Pixel ops (PIL ImageOps / ImageEnhance semantics).
# ----------------------------------------------------------------------------------------


def identity(image: tf.Tensor) -> tf.Tensor:
  return image


def invert(image: tf.Tensor) -> tf.Tensor:
  """255 - x."""
  return _like(255.0 - _to_float(image), image)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
  """Pixels >= threshold become 255 - x (threshold 256: identity, 0: invert)."""
  x = _to_float(image)
  return _like(tf.where(x < tf.cast(threshold, tf.float32), x, 255.0 - x), image)


def solarize_add(image: tf.Tensor, addition, threshold=128) -> tf.Tensor:
  """Pixels below threshold get `addition` added (clipped at 255); addition 0: identity."""
  x = _to_float(image)
  added = tf.minimum(x + tf.cast(addition, tf.float32), 255.0)
  return _like(tf.where(x < tf.cast(threshold, tf.float32), added, x), image)


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
  """Keeps the `bits` most significant bits of each pixel (8 or more: identity, 0: black)."""
  shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  step = tf.bitwise.left_shift(1, shift)
  x = _quantized(image)
  return _like(_to_float((x // step) * step), image)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with black (ImageEnhance.Brightness); factor 1: identity."""
  return _like(blend(tf.zeros_like(image, tf.float32), image, factor), image)


def color(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with the grey image (ImageEnhance.Color, i.e. saturation); factor 1: identity."""
  return _like(blend(grayscale_of(image), image, factor), image)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with the image's mean grey level (ImageEnhance.Contrast); factor 1: identity.

  The mean is the per-image (per-frame) mean luma, rounded as PIL does. big_vision's
  TensorFlow port divides the pixel count by 256 instead (a known slip); we follow PIL.
  """
  mean = tf.round(tf.reduce_mean(grayscale_of(image), axis=[-3, -2, -1], keepdims=True))
  return _like(blend(mean, image, factor), image)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """Blend with PIL's SMOOTH-filtered image (ImageEnhance.Sharpness); factor 1: identity.

  The 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on interior pixels; the
  one-pixel border keeps the original values, as in PIL.
  """
  x = _batched(_to_float(image))
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding="VALID")
  smooth = tf.round(tf.clip_by_value(smooth, 0.0, 255.0))
  interior = tf.pad(tf.ones_like(smooth), [[0, 0], [1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior > 0, tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]]), x)
  return _like(_unbatched(blend(degenerate, x, factor), image), image)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel of each image linearly so its minimum is 0 and maximum 255.

  A constant channel is left as it is (ImageOps.autocontrast with cutoff 0).
  """
  x = _to_float(image)
  lo = tf.reduce_min(x, axis=[-3, -2], keepdims=True)
  hi = tf.reduce_max(x, axis=[-3, -2], keepdims=True)
  scale = 255.0 / tf.maximum(hi - lo, 1e-6)
  return _like(tf.where(hi > lo, (x - lo) * scale, x), image)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Histogram equalisation of each channel of each image (ImageOps.equalize).

  PIL's rule: with h the channel's 256-bin histogram, step = (number of pixels -
  count of the highest occupied level) // 255; level v maps to
  (sum(h[:v]) + step // 2) // step; step 0 (one or two levels) leaves the channel.
  """
  x = _quantized(image)
  batch = _batched(x)  # [N, H, W, 3]
  shape = tf.shape(batch)
  channels = tf.reshape(tf.transpose(batch, [0, 3, 1, 2]), [shape[0] * 3, -1])  # [N*3, H*W]
  hist = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)  # [N*3, 256]
  levels = tf.range(256)
  top = tf.reduce_max(tf.where(hist > 0, levels[None, :], -1), axis=-1)  # highest level
  top_count = tf.gather(hist, top, batch_dims=1)
  step = (tf.reduce_sum(hist, -1) - top_count) // 255  # [N*3]
  safe_step = tf.maximum(step, 1)[:, None]
  cumulative = tf.cumsum(hist, axis=-1, exclusive=True)  # sum(h[:v])
  lut = tf.clip_by_value((cumulative + safe_step // 2) // safe_step, 0, 255)
  mapped = tf.gather(lut, channels, batch_dims=1)
  mapped = tf.where(step[:, None] > 0, mapped, channels)
  mapped = tf.transpose(tf.reshape(mapped, [shape[0], 3, shape[1], shape[2]]), [0, 2, 3, 1])
  return _like(_to_float(_unbatched(mapped, x)), image)


def grayscale(image: tf.Tensor) -> tf.Tensor:
  """Every channel set to the luma (torchvision Grayscale(3), PIL "L")."""
  return _like(tf.broadcast_to(grayscale_of(image), tf.shape(image)), image)


def gaussian_blur(image: tf.Tensor, sigma, max_sigma: float = 2.0) -> tf.Tensor:
  """Separable Gaussian blur with standard deviation `sigma` pixels (<= max_sigma).

  The kernel has 2 * ceil(3 * max_sigma) + 1 taps, so `sigma` may be a tensor; at the
  borders the kernel is renormalised over the pixels inside the image (no padding
  values leak in), which keeps any image size valid.
  """
  half = int(math.ceil(3 * max_sigma))
  taps = tf.range(-half, half + 1, dtype=tf.float32)
  sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
  weights = tf.exp(-0.5 * tf.square(taps / sigma))
  weights = weights / tf.reduce_sum(weights)
  x = _batched(_to_float(image))
  ones = tf.ones_like(x[..., :1])

  def conv(t, kernel):  # depthwise, zero padding
    k = tf.tile(kernel, [1, 1, tf.shape(t)[-1], 1])
    return tf.nn.depthwise_conv2d(t, k, [1, 1, 1, 1], padding="SAME")

  rows = tf.reshape(weights, [-1, 1, 1, 1])
  cols = tf.reshape(weights, [1, -1, 1, 1])
  blurred = conv(conv(x, rows), cols)
  norm = conv(conv(ones, rows), cols)
  return _like(_unbatched(blurred / norm, image), image)


# ----------------------------------------------------------------------------------------
# Geometric ops: PIL Image.transform(AFFINE) semantics, bilinear, per-channel fill.
# ----------------------------------------------------------------------------------------


def affine(image: tf.Tensor, matrix, fill: Fill = 128) -> tf.Tensor:
  """Output pixel (x, y) samples the input at (a x + b y + c, d x + e y + f).

  Args:
    image: [H, W, 3] or [T, H, W, 3], pixels in [0, 255].
    matrix: (a, b, c, d, e, f) as PIL's AFFINE data (x right, y down, the pixel at
      index (i, j) covering [j, j + 1) x [i, i + 1)).
    fill: value of pixels that map outside the input; one value or one per channel.
      Border pixels blend image and fill in proportion to their coverage.
  """
  a, b, c, d, e, f = (tf.cast(m, tf.float32) for m in matrix)
  # PIL's coordinates put pixel centres at +0.5, TensorFlow's at the integer index.
  c = c + 0.5 * (a + b - 1.0)
  f = f + 0.5 * (d + e - 1.0)
  transform = tf.stack([a, b, c, d, e, f, 0.0, 0.0])[None, :]
  x = _batched(_to_float(image))
  # A channel of ones tracks how much of each output pixel the input covers.
  x = tf.concat([x, tf.ones_like(x[..., :1])], -1)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=tf.tile(transform, [tf.shape(x)[0], 1]),
      output_shape=tf.shape(x)[1:3], fill_value=0.0, interpolation="BILINEAR",
      fill_mode="CONSTANT")
  coverage = out[..., 3:]
  fill = tf.broadcast_to(tf.cast(tf.reshape(fill, [-1]), tf.float32), [3])
  out = out[..., :3] + (1.0 - coverage) * fill
  return _like(_unbatched(out, image), image)


def rotate(image: tf.Tensor, degrees, fill: Fill = 128) -> tf.Tensor:
  """Rotates counter-clockwise by `degrees` about the image centre (PIL Image.rotate)."""
  h, w = _hw_float(image)
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(theta), tf.sin(theta)
  # Output -> input: rotate the output point clockwise about the image centre.
  cx, cy = w / 2.0, h / 2.0
  return affine(image, (cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy), fill)


def shear_x(image: tf.Tensor, factor, fill: Fill = 128) -> tf.Tensor:
  """x_in = x + factor * y (PIL AFFINE (1, factor, 0, 0, 1, 0)); factor 0: identity."""
  return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image: tf.Tensor, factor, fill: Fill = 128) -> tf.Tensor:
  """y_in = factor * x + y (PIL AFFINE (1, 0, 0, factor, 1, 0)); factor 0: identity."""
  return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), fill)


def translate_x(image: tf.Tensor, pixels, fill: Fill = 128) -> tf.Tensor:
  """Content moves left by `pixels` (x_in = x + pixels, as PIL and timm)."""
  return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y(image: tf.Tensor, pixels, fill: Fill = 128) -> tf.Tensor:
  """Content moves up by `pixels` (y_in = y + pixels)."""
  return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


# color_jitter's keyword arguments shadow these names.
_brightness, _contrast = brightness, contrast


def _hw_float(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  shape = tf.shape(image)
  return tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)


# ----------------------------------------------------------------------------------------
# Random ops (stateless seeds).
# ----------------------------------------------------------------------------------------


def cutout(image: tf.Tensor, half_size, seed: tf.Tensor, fill: Fill = 128) -> tf.Tensor:
  """A (2 half_size)^2 square, its centre a uniformly random pixel, clipped at the borders,
  set to `fill` (big_vision's / the TPU EfficientNet cutout); half_size 0: identity."""
  shape = tf.shape(image)
  h, w = shape[-3], shape[-2]
  cy_seed, cx_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  cy = tf.random.stateless_uniform([], cy_seed, 0, h, tf.int32)
  cx = tf.random.stateless_uniform([], cx_seed, 0, w, tf.int32)
  half = tf.cast(half_size, tf.int32)
  rows = tf.range(h)[:, None]
  cols = tf.range(w)[None, :]
  inside = ((rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half))
  fill = tf.broadcast_to(tf.cast(tf.reshape(fill, [-1]), tf.float32), [3])
  out = tf.where(inside[..., None], fill, _to_float(image))
  return _like(out, image)


def random_rotate(image: tf.Tensor, max_degrees, seed: tf.Tensor, fill: Fill = 128) -> tf.Tensor:
  """Rotation by an angle uniform in [-max_degrees, max_degrees]."""
  degrees = tf.random.stateless_uniform([], seed, -1.0, 1.0) * max_degrees
  return rotate(image, degrees, fill)


def random_translate(image: tf.Tensor, max_fraction, seed: tf.Tensor,
                     fill: Fill = 128) -> tf.Tensor:
  """Shift by up to `max_fraction` of the width and of the height, each uniform;
  fractional shifts interpolate bilinearly (as timm's TranslateRel through PIL)."""
  h, w = _hw_float(image)
  u = tf.random.stateless_uniform([2], seed, -1.0, 1.0) * max_fraction
  return affine(image, (1.0, 0.0, u[0] * w, 0.0, 1.0, u[1] * h), fill)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0) -> tf.Tensor:
  """torchvision's ColorJitter: the four adjustments in a random order, each factor
  uniform in [max(0, 1 - s), 1 + s] (hue: a shift uniform in [-hue, hue] turns).

  Brightness, contrast and saturation are the `brightness`, `contrast` and `color`
  ops above; hue rotates in HSV. A strength of 0 skips that adjustment.
  """
  order_seed, b_seed, c_seed, s_seed, h_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 5))

  def factor(strength, s):
    return tf.random.stateless_uniform([], s, max(0.0, 1.0 - strength), 1.0 + strength)

  def adjust_hue(x):
    delta = tf.random.stateless_uniform([], h_seed, -hue, hue)
    return tf.image.adjust_hue(_to_float(x) / 255.0, delta) * 255.0

  adjustments = []
  if brightness > 0:
    adjustments.append(lambda x: _to_float(_brightness(x, factor(brightness, b_seed))))
  if contrast > 0:
    adjustments.append(lambda x: _to_float(_contrast(x, factor(contrast, c_seed))))
  if saturation > 0:
    adjustments.append(lambda x: _to_float(color(x, factor(saturation, s_seed))))
  if hue > 0:
    adjustments.append(adjust_hue)
  if not adjustments:
    return image
  order = tf.argsort(tf.random.stateless_uniform([len(adjustments)], order_seed))
  x = _to_float(image)
  for position in range(len(adjustments)):
    # Each branch keeps the float32 [0, 255] intermediate (no rounding between steps).
    x = tf.switch_case(order[position], [lambda f=f, x=x: tf.clip_by_value(f(x), 0.0, 255.0)
                                         for f in adjustments])
    x = tf.ensure_shape(x, image.shape)
  return _like(x, image)


def three_augment(image: tf.Tensor, seed: tf.Tensor, jitter: float = 0.3) -> tf.Tensor:
  """DeiT III's 3-Augment: one of grayscale, solarize (threshold 128) or Gaussian blur
  (sigma uniform in [0.1, 2]) chosen uniformly, then color_jitter(jitter, jitter, jitter)."""
  choice_seed, sigma_seed, jitter_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  choice = tf.random.stateless_uniform([], choice_seed, 0, 3, tf.int32)
  sigma = tf.random.stateless_uniform([], sigma_seed, 0.1, 2.0)
  x = tf.switch_case(choice, [lambda: _to_float(grayscale(image)),
                              lambda: _to_float(solarize(image, 128)),
                              lambda: _to_float(gaussian_blur(image, sigma))])
  x = _like(tf.ensure_shape(x, image.shape), image)
  if jitter > 0:
    x = color_jitter(x, jitter_seed, jitter, jitter, jitter, 0.0)
  return x


def random_erasing(image: tf.Tensor, seed: tf.Tensor, prob: float = 0.25,
                   area: tuple[float, float] = (0.02, 1 / 3),
                   aspect: tuple[float, float] = (0.3, 1 / 0.3),
                   mode: str = "pixel", attempts: int = 10) -> tf.Tensor:
  """timm's RandomErasing (DeiT: prob 0.25, mode "pixel") on a NORMALISED float image.

  With probability `prob`, a box of area fraction uniform in `area` and aspect ratio
  (h / w) log-uniform in `aspect` is placed uniformly; the first of `attempts` draws
  that fits strictly inside the image is used (none fits: unchanged). Its pixels
  become N(0, 1) draws per pixel and channel ("pixel"), one draw per channel
  ("rand"), or 0 ("const"): in the model's input units, as timm erases after the
  mean/std normalisation. Works on [H, W, C] and [T, H, W, C] (one box, fresh noise
  per frame).
  """
  apply_seed, box_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  shape = tf.shape(image)
  h, w = shape[-3], shape[-2]
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  u = tf.random.stateless_uniform([attempts, 4], box_seed)
  target = (area[0] + (area[1] - area[0]) * u[:, 0]) * hf * wf
  log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
  ratio = tf.exp(log_lo + (log_hi - log_lo) * u[:, 1])
  bh = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
  bw = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
  fits = (bh < h) & (bw < w)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  bh, bw = bh[first], bw[first]
  top = tf.cast(tf.floor(u[first, 2] * tf.cast(h - bh + 1, tf.float32)), tf.int32)
  left = tf.cast(tf.floor(u[first, 3] * tf.cast(w - bw + 1, tf.float32)), tf.int32)
  apply = (tf.random.stateless_uniform([], apply_seed) < prob) & tf.reduce_any(fits)
  if mode not in ("pixel", "rand", "const"):
    raise ValueError(f"random_erasing mode={mode!r}; use 'pixel', 'rand' or 'const'.")

  def erase():
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    if mode == "pixel":
      values = tf.random.stateless_normal(shape, noise_seed, dtype=image.dtype)
    elif mode == "rand":
      values = tf.broadcast_to(tf.random.stateless_normal([shape[-1]], noise_seed,
                                                          dtype=image.dtype), shape)
    else:
      values = tf.zeros_like(image)
    return tf.where(inside[..., None], values, image)

  # Most images are not erased (DeiT: 75%); they skip drawing a full image of noise.
  return tf.cond(apply, erase, lambda: image)
