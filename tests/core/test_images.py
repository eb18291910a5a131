"""Reading images of any mode, and refusing bad ones with a message naming the problem."""

import cv2
import numpy as np
import pytest

from geojax.core.images import (
    ImageError,
    ImageTooLarge,
    decode_image,
    encode_png,
    load_image,
    resize_to,
)


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
    with pytest.raises(ImageError, match="bad.png: not a readable image") as info:
        load_image(bad)
    assert "0x" not in str(info.value)  # PIL's message names an object address
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


def test_alpha_and_16_bit_are_converted_in_integers_like_the_float_formula():
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    out = decode_image(cv2.imencode(".png", bgra)[1].tobytes())
    rgb, alpha = bgra[..., 2::-1].astype(np.float64), bgra[..., 3:].astype(np.float64) / 255
    expected = np.clip(rgb * alpha + 255 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1
    deep = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    out = decode_image(cv2.imencode(".png", deep)[1].tobytes())
    assert np.abs(out[..., 0].astype(int) - np.round(deep / 257.0)).max() <= 1


def test_side_guard_refuses_extreme_strips_before_decoding():
    strip = encode_png(np.zeros((2, 3000, 3), np.uint8))
    with pytest.raises(ImageTooLarge, match="3000x2 has a side of 3,000 pixels, over the limit"):
        decode_image(strip, max_side=2000)
    assert decode_image(strip).shape == (2, 3000, 3)  # the default side limit is 20,000


def test_opencv_errors_are_image_errors(monkeypatch):
    def fail(*args):
        raise cv2.error("OpenCV(4.x) imgcodecs: -215:Assertion failed")
    monkeypatch.setattr(cv2, "imdecode", fail)
    with pytest.raises(ImageError, match="upload: OpenCV could not decode the image"):
        decode_image(encode_png(np.zeros((4, 4, 3), np.uint8)))


def test_resize_shrinks_a_long_strip_before_padding_it():
    strip = np.zeros((3, 200_000, 3), np.uint8)  # as a square it would be 120 GB
    strip[:, :100_000] = 255
    out = resize_to(strip, 32)
    assert out.shape == (32, 32, 3)
    # The strip becomes one row across the middle (row 15), its left half white, its right
    # half black; the rest is the border's median colour.
    assert out[15, :15].min() > 200 and out[15, 17:].max() < 50
    assert np.all(np.delete(out, 15, axis=0) == 127)
