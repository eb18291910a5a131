"""On-device augmentation: ops from a spec string, labels kept, boxes follow the geometry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax.data import render_shape
from geojax.data.device import augment as device_augment
from geojax.data.device import pixels
from geojax.data.pipeline import DEFAULT_DEVICE_OPS
from geojax.data.render import mask_bbox

SIZE = 32


def _samples(n: int, size: int = SIZE):
    """CPU-rendered shapes as device samples, with their masks and boxes."""
    shapes = [render_shape(np.random.default_rng(i), size) for i in range(n)]
    batch = {
        "image": jnp.asarray(np.stack([s.image for s in shapes]), jnp.float32),
        "box": jnp.asarray([s.bbox for s in shapes], jnp.int32),
        "label": jnp.asarray([s.label for s in shapes], jnp.int32),
    }
    return shapes, batch


@functools.cache
def _compiled(spec: str):
    return jax.jit(jax.vmap(device_augment.compose(spec)))


def _apply(spec: str, batch, seed: int = 0):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(batch["label"]))
    out = jax.tree.map(np.asarray, _compiled(spec)(keys, batch))
    return out, out["box"]


def test_flips_and_quarter_turns_move_pixels_and_boxes_exactly():
    shapes, batch = _samples(12)
    out, boxes = _apply("flip_lr(p=1.0)|rot90", batch)
    for i, shape in enumerate(shapes):
        mirrored = shape.image[:, ::-1]
        # Exactly one of the four turns of the mirrored image (bilinear at whole pixels).
        turns = [k for k in range(4) if np.array_equal(out["image"][i], np.rot90(mirrored, k))]
        assert len(turns) == 1, i
        assert tuple(boxes[i]) == mask_bbox(np.rot90(shape.mask[:, ::-1], turns[0]))
    assert np.array_equal(out["label"], batch["label"])


def test_uniform_scale_keeps_the_shape_whole_and_scales_its_box_about_the_centre():
    shapes, batch = _samples(12, 48)
    out, boxes = _apply("affine(scale=0.8)", batch)
    centre = (48 - 1) / 2
    for i, shape in enumerate(shapes):
        x0, y0, x1, y1 = shape.bbox
        # Pixel i spans [i - 0.5, i + 0.5]: scale the covered extent, not the indices.
        lo = centre + 0.8 * (np.array([x0, y0]) - 0.5 - centre)
        hi = centre + 0.8 * (np.array([x1, y1]) - 0.5 - centre)
        assert np.abs(boxes[i][:2] - 0.5 - lo).max() <= 0.5, (i, boxes[i], lo, hi)
        assert np.abs(boxes[i][2:] - 0.5 - hi).max() <= 0.5, (i, boxes[i], lo, hi)
        # The picture shrank with the box: the shape's pixels (unlike the background's) lie
        # inside it, and the frame's border rows show background only.
        inside = np.zeros((48, 48), bool)
        inside[boxes[i][1]:boxes[i][3], boxes[i][0]:boxes[i][2]] = True
        far = out["image"][i][~inside].reshape(-1, 3)
        border = np.concatenate([out["image"][i][0], out["image"][i][-1]])
        assert np.abs(border.mean(0) - far.mean(0)).max() < 25, i
    assert np.array_equal(out["label"], batch["label"])


def test_the_default_ops_keep_labels_boxes_inside_and_pixels_in_range():
    shapes, batch = _samples(32)
    out, boxes = _apply(DEFAULT_DEVICE_OPS, batch)
    again, _ = _apply(DEFAULT_DEVICE_OPS, batch)
    other, _ = _apply(DEFAULT_DEVICE_OPS, batch, seed=1)
    assert np.array_equal(out["image"], again["image"])  # the key fixes everything
    assert not np.array_equal(out["image"], other["image"])
    assert np.array_equal(out["label"], batch["label"])
    assert out["image"].min() >= 0 and out["image"].max() <= 255
    for i, shape in enumerate(shapes):
        x0, y0, x1, y1 = boxes[i]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        # Flips, turns and shrinking keep the shape whole: its box keeps its size or shrinks
        # to 0.8 of it (sides swap with a quarter turn).
        before = sorted(np.subtract(shape.bbox[2:], shape.bbox[:2]))
        after = sorted([x1 - x0, y1 - y0])
        assert all(0.8 * b - 1 <= a <= b for a, b in zip(after, before, strict=True)), i
    # The photometric ops changed pictures, and not always the same way.
    changed = np.abs(out["image"] - np.asarray(batch["image"])).mean(axis=(1, 2, 3))
    assert (changed > 1).mean() > 0.5


def test_hsv_round_trip_is_the_identity():
    rgb = jax.random.uniform(jax.random.PRNGKey(0), (500, 3), maxval=255.0)
    h, s, v = pixels.rgb_to_hsv(rgb)
    np.testing.assert_allclose(pixels.hsv_to_rgb(h, s, v), rgb, atol=1e-3)


@pytest.mark.parametrize(("spec", "message"), [
    ("flip_lr|shear_x(10)", "unknown op 'shear_x'; valid: flip_lr"),
    ("affine(scale=(0.8,)", "cannot read op"),
    ("blur(sigma=-1.0)", "bad arguments for blur"),
    ("noise(strength=3)", "bad arguments for noise"),
])
def test_bad_op_specs_fail_naming_the_op(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        device_augment.compose(spec)


def test_noise_from_a_bank_is_a_window_of_it_at_a_random_offset():
    bank = jax.random.normal(jax.random.PRNGKey(0), (20, 24, 3))
    windows = [np.asarray(pixels.standard_normal(jax.random.PRNGKey(i), (8, 8, 3), bank))
               for i in range(6)]
    b = np.asarray(bank)
    offsets = set()
    for w in windows:
        found = [(r, c) for r in range(13) for c in range(17)
                 if np.array_equal(b[r:r + 8, c:c + 8], w)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 3  # samples read different windows
    single = np.asarray(pixels.standard_normal(jax.random.PRNGKey(1), (8, 8), bank))
    assert any(np.array_equal(b[r:r + 8, c:c + 8, 0], single) for r in range(13) for c in range(17))
    with pytest.raises(ValueError, match="smaller"):
        pixels.standard_normal(jax.random.PRNGKey(0), (32, 8, 3), bank)


def _numpy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 7-tap Gaussian, edges replicated, by index clipping."""
    r = pixels.BLUR_RADIUS
    weights = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    weights /= weights.sum()
    for axis in (0, 1):
        n = image.shape[axis]
        image = sum(w * np.take(image, np.clip(np.arange(n) + i - r, 0, n - 1), axis=axis)
                    for i, w in enumerate(weights))
    return image


@pytest.mark.parametrize("sigma", [0.3, 1.0, 1.5])
def test_blur_is_a_separable_gaussian_with_replicated_edges(sigma):
    image = np.random.default_rng(0).uniform(0, 255, (12, 9, 3)).astype(np.float32)
    expected = _numpy_blur(image.astype(np.float64), sigma)
    np.testing.assert_allclose(jax.jit(pixels.gaussian_blur)(image, sigma), expected,
                               atol=1e-3)
    # Sigma 0 is exactly the identity: a per-sample blur needs no select.
    np.testing.assert_array_equal(jax.jit(pixels.gaussian_blur)(image, 0.0), image)
    # The GPU's form of each pass (a shift per tap), run here: the same sums.
    weights = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2).astype(np.float32)
    weights /= weights.sum()
    for axis in (0, 1):
        np.testing.assert_allclose(
            pixels.taps_from_shifts(jnp.asarray(image), weights, axis),
            pixels.taps_from_padded(jnp.asarray(image), weights, axis), atol=1e-4)


def test_pixel_ops_can_round_to_whole_levels_as_on_uint8_images():
    _, batch = _samples(4)
    spec = "affine(scale=0.9)|brightness_contrast(0.25, 0.3, p=1.0)|invert(p=1.0)"
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    floats, levels = (jax.jit(jax.vmap(device_augment.compose(spec, whole_levels=w)))(
        keys, batch)["image"] for w in (False, True))
    np.testing.assert_array_equal(levels, np.round(levels))
    assert not np.array_equal(floats, np.round(floats))  # the CPU's default keeps floats
    np.testing.assert_allclose(levels, floats, atol=1.0)  # under a level per op


def test_render_effects_left_pending_are_composed_into_the_ops_or_applied_last():
    _, batch = _samples(3)
    image = batch["image"]
    pending = {**batch, "blur_sigma": jnp.full(3, 1.0), "noise_sigma": jnp.zeros(3)}
    # No blur op: the pending blur comes after the last op, and is not left in the sample.
    out, _ = _apply("invert(p=0.0)", pending)
    assert "blur_sigma" not in out and "noise_sigma" not in out
    np.testing.assert_allclose(out["image"], jax.vmap(pixels.gaussian_blur)(
        image, jnp.full(3, 1.0)), atol=1e-3)
    # A blur op takes it up: one blur, the two sigmas composed (Gaussians: sigma^2 add).
    out, _ = _apply("blur(sigma=0.5, p=1.0)", pending)
    composed = jax.vmap(pixels.gaussian_blur)(image, jnp.full(3, np.sqrt(1.25)))
    np.testing.assert_allclose(out["image"], composed, atol=1e-3)
    # Pending noise: the noise op's std and the renderer's add as variances.
    flat = {"image": jnp.full((1, 96, 96, 3), 128.0), "box": batch["box"][:1],
            "label": batch["label"][:1], "noise_sigma": jnp.full(1, 6.0),
            "noise_bank": jax.random.normal(jax.random.PRNGKey(0), (1, 192, 192, 3))}
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    noisy = jax.vmap(device_augment.compose("noise(std=0.0314, p=1.0)"))(keys, flat)
    assert abs(float(np.std(np.asarray(noisy["image"]) - 128.0)) - np.hypot(6.0, 8.0)) < 0.5
