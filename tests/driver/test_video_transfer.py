"""The image-to-video transfer demo's configs: `configs/vit_digits.py:canvas` writes a run
that `configs/vivit_moving_digits.py:VARIANT,vit_canvas` initialises from.

The image run is a real Orbax workdir (the driver's Checkpointer) of the canvas config's
ViT-Nano_4 at its initial parameters; the video config reads it through `train.Setup`, as
`python -m vit_jax.main` does (on `moving_digits/tiny`, whose clips have the default's
frame size after the resize to 16x16).
"""

import logging

import jax
import numpy as np

from tests.helpers import load_config
from vit_jax import checkpoint
from vit_jax.driver import checkpointer, train


def test_the_video_config_initialises_from_the_canvas_image_run(canvas_data_dir, video_data_dir,
                                                               tmp_path, caplog):
  image_workdir = str(tmp_path / "vit_digits_canvas")
  image_config = load_config("configs/vit_digits.py:canvas")
  image_config.data.data_dir = canvas_data_dir
  setup = train.Setup(image_config, image_workdir)
  assert setup.info.input_shape == (16, 16, 3) and setup.info.num_classes == 10
  ckpt = checkpointer.Checkpointer(image_workdir)
  ckpt.save(setup.state_from_params(setup.init_params()))
  ckpt.wait()
  ckpt.close()
  image = checkpoint.load(image_workdir)

  video_config = load_config("configs/vivit_moving_digits.py:spatio_temporal,vit_canvas")
  video_config.init_from.path = image_workdir
  video_config.data.dataset = "moving_digits/tiny"
  video_config.data.data_dir = video_data_dir
  with caplog.at_level(logging.INFO):
    params = jax.device_get(train.Setup(video_config, str(tmp_path / "video"))
                            .pretrained_params(image_workdir))
  assert "ViViT initialisation from an image ViT" in caplog.text
  # central_frame: the image patch kernel on frame t // 2 = 1 of the 2-frame tubelet.
  kernel = params["embedding"]["kernel"]  # [2, 4, 4, 3, 64]
  assert kernel.shape == (2, 4, 4, 3, 64)
  np.testing.assert_array_equal(kernel[1], image["embedding"]["kernel"])
  assert not kernel[0].any()
  np.testing.assert_array_equal(params["cls"], image["cls"])
  # [1, 1 + 16, 64] image rows tiled over the 4 tubelets: [1, 1 + 4 * 16, 64].
  posemb, image_posemb = (p["Transformer"]["posembed_input"]["pos_embedding"]
                          for p in (params, image))
  np.testing.assert_array_equal(posemb[:, 0], image_posemb[:, 0])
  np.testing.assert_array_equal(posemb[0, 1:].reshape(4, 16, 64),
                                np.broadcast_to(image_posemb[0, 1:], (4, 16, 64)))
  for block in ("encoderblock_0", "encoderblock_3"):
    np.testing.assert_array_equal(
        params["Transformer"][block]["MlpBlock_0"]["Dense_0"]["kernel"],
        image["Transformer"][block]["MlpBlock_0"]["Dense_0"]["kernel"])
  # 20 video classes, 10 digits: a new (zero) head.
  assert params["output_projection"]["kernel"].shape == (64, 20)
  assert not params["output_projection"]["kernel"].any()
