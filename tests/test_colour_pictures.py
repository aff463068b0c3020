"""Colour (3-channel) images are drawn in colour, at their relative intensities, in the run's
grids as in `gengraph sample --out x.png`."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from gengraph.plugins.blocks import plots
from gengraph.plugins.models.latent_common import tiled_images


@pytest.mark.parametrize("draw", ["tiled", "grid"])
def test_colour_images_keep_their_colours_and_intensities(tmp_path, draw):
    # the run's tiled grid averaged the channels to grey; both grids clipped grey levels 0..255 at 1
    imgs = np.zeros((2, 3, 6, 6))
    imgs[0, 0] = 100.0  # dark red
    imgs[1, 1] = 200.0  # bright green
    path = tmp_path / "x.png"
    if draw == "tiled":
        tiled_images(imgs.reshape(2, -1), (3, 6, 6), path, cols=2)
    else:
        plots.image_grid(imgs.reshape(2, -1), (3, 6, 6), path, cols=2)
    a = mpimg.imread(path)[..., :3]
    red = a[(a[..., 0] > 0.3) & (a[..., 1] < 0.1) & (a[..., 2] < 0.1)]
    green = a[(a[..., 1] > 0.3) & (a[..., 0] < 0.1) & (a[..., 2] < 0.1)]
    assert len(red) > 20 and len(green) > 20  # both in colour
    assert np.median(red[:, 0]) == pytest.approx(0.5, abs=0.06) and np.median(green[:, 1]) > 0.94
