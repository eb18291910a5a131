"""Reading images of any mode, and refusing bad ones with a message naming the problem."""

import cv2
import numpy as np
import pytest

from geojax.data import ImageError, decode_image, load_image, resize_to
from geojax.data.images import encode_png


def test_modes_become_rgb8(tmp_path):
    gray = np.full((10, 12), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    deep = np.full((10, 12, 3), 65535, np.uint16)
    deep[..., 2] = 0  # BGR: no red
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    rgba = np.zeros((10, 12, 4), np.uint8)  # fully transparent black
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.all(load_image(tmp_path / "g.png") == 200)
    d = load_image(tmp_path / "d.png")
    assert d.shape == (10, 12, 3) and list(d[0, 0]) == [0, 255, 255]
    assert np.all(load_image(tmp_path / "a.png") == 255)  # composited over white


def test_rgb_order_is_kept_through_png():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255
    assert list(decode_image(encode_png(image))[0, 0]) == [255, 0, 0]


def test_bad_images_fail_naming_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="bad.png: not a readable image"):
        load_image(bad)
    with pytest.raises(ImageError, match="missing.png: cannot read file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="upload: empty file"):
        decode_image(b"")
    with pytest.raises(ImageError, match="expected encoded image bytes"):
        decode_image("a string")  # type: ignore[arg-type]
    truncated = encode_png(np.zeros((64, 64, 3), np.uint8))[:60]
    with pytest.raises(ImageError, match="upload"):
        decode_image(truncated)


def test_pixel_guard_refuses_huge_images_before_decoding():
    big = encode_png(np.zeros((1200, 1000, 3), np.uint8))
    with pytest.raises(ImageError, match="1000x1200 is 1,200,000 pixels, over the limit"):
        decode_image(big, max_pixels=1_000_000)


def test_resize_pads_to_square_instead_of_squashing():
    wide = np.full((20, 60, 3), 255, np.uint8)
    cv2.circle(wide, (30, 10), 8, (0, 0, 0), -1)
    out = resize_to(wide, 30)
    assert out.shape == (30, 30, 3)
    ys, xs = np.nonzero(out[..., 0] < 128)
    assert abs(np.ptp(xs) - np.ptp(ys)) <= 1  # the circle is still round
