"""Rasterise a synthetic person into a 128x64 crop, vectorised in numpy (no per-pixel loops).

The body is drawn in body coordinates ``u = (x - cx) / h`` and ``v = (y - top) / h`` where
``h`` is the person's height in pixels: ``v`` runs 0 (top of head) to 1 (soles), ``u`` is the
horizontal offset in the same unit. Every part is a boolean mask over the crop, painted back to
front. The viewpoint decides what is visible: a backpack is a big patch from behind and two
straps from the front, a shoulder bag hangs on the side the person carries it (mirrored between
front and back, hidden behind the body from the far side), a chest logo is seen only from the
front, the face only from the front and side.

After painting, the camera style is applied (colour cast, contrast/brightness, gamma,
illumination gradient, blur, noise) and the crop is JPEG-encoded with the camera's quality.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from reid.data.synthetic.appearance import CameraStyle, Identity, View

CROP_HEIGHT, CROP_WIDTH = 128, 64
"""Market-1501 crop size (H x W)."""

_YY, _XX = np.mgrid[0:CROP_HEIGHT, 0:CROP_WIDTH].astype(np.float32) + np.float32(0.5)


@dataclass(frozen=True)
class Pose:
    """Where the person stands in the crop and how they move in this frame."""

    view: View
    center_x: float  # pixels
    top: float  # pixels, y of the top of the head
    height: float  # pixels, head to soles
    stride: float  # leg spread for side views, body units
    arm_swing: float  # arm angle for side views, body units


def sample_pose(rng: np.random.Generator, identity: Identity, view: View) -> Pose:
    """Per-image jitter of the detection box: scale, horizontal and vertical offset, gait."""
    height = CROP_HEIGHT * 0.9 * identity.height * rng.uniform(0.88, 1.04)
    return Pose(
        view=view,
        center_x=CROP_WIDTH / 2 + rng.normal(0.0, 2.5),
        top=(CROP_HEIGHT - height) / 2 + rng.normal(0.0, 3.0),
        height=float(height),
        stride=float(rng.uniform(-0.25, 0.25)),
        arm_swing=float(rng.uniform(-0.2, 0.2)),
    )


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def _ellipse(u: np.ndarray, v: np.ndarray, uc: float, vc: float, ru: float, rv: float) -> np.ndarray:
    return ((u - uc) / ru) ** 2 + ((v - vc) / rv) ** 2 <= 1.0


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """In place: ``image[mask] = colour`` where colour is RGB or a per-pixel H x W x 3 field."""
    image[mask] = colour[mask] if colour.ndim == 3 else colour


def _upper_field(person: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-pixel colour of the top: plain, horizontal stripes or checks."""
    if person.upper_pattern == "plain":
        return person.upper
    rows = np.floor(v / person.pattern_period) % 2 == 1
    if person.upper_pattern == "checks":
        rows ^= np.floor(u / person.pattern_period) % 2 == 1
    return np.where(rows[..., None], person.upper_second, person.upper)


def _draw_legs(image: np.ndarray, person: Identity, pose: Pose, u: np.ndarray, v: np.ndarray) -> None:
    """Two legs (spread apart in side views), lower garment over them, shoes at the bottom."""
    side = pose.view in (View.LEFT, View.RIGHT)
    half = 0.036 * person.width
    for sign in (-1.0, 1.0):
        centre = sign * pose.stride * (v - 0.5) if side else sign * 0.045 * person.width
        leg = (np.abs(u - centre) < half) & (v >= 0.5) & (v < 0.95)
        covered = {"trousers": 0.95, "shorts": 0.68, "skirt": 0.5}[person.lower_kind]
        _paint(image, leg & (v >= covered), person.skin)
        _paint(image, leg & (v < covered), person.lower)
        facing = 0.02 if pose.view == View.RIGHT else -0.02 if pose.view == View.LEFT else 0.0
        _paint(image, (np.abs(u - centre - facing) < half * 1.25) & (v >= 0.94) & (v < 0.99), person.shoes)
    hip = 0.11 * person.width * (0.65 if side else 1.0)
    _paint(image, _box(u, v, -hip, hip, 0.48, 0.56), person.lower)
    if person.lower_kind == "skirt":
        flare = hip + 0.08 * (v - 0.48)
        _paint(image, (np.abs(u) < flare) & (v >= 0.48) & (v < 0.74), person.lower)


def _draw_torso_and_arms(image: np.ndarray, person: Identity, pose: Pose, u: np.ndarray, v: np.ndarray):
    """Trapezoid torso in the top's colour/pattern; arms at the sides (front/back) or over it (side)."""
    side = pose.view in (View.LEFT, View.RIGHT)
    squeeze = 0.62 if side else 1.0
    top_half, bottom_half = 0.13 * person.width * squeeze, 0.11 * person.width * squeeze
    t = np.clip((v - 0.17) / 0.33, 0.0, 1.0)
    torso = (np.abs(u) < top_half + (bottom_half - top_half) * t) & (v >= 0.165) & (v < 0.52)
    field = _upper_field(person, u, v)
    _paint(image, torso | _ellipse(u, v, 0.0, 0.19, top_half, 0.035), field)
    sleeve_end = 0.3 if person.short_sleeves else 0.46
    arm_half = 0.028 * person.width
    centres = [pose.arm_swing * (v - 0.17)] if side else [-top_half - arm_half, top_half + arm_half]
    for centre in centres:
        arm = (np.abs(u - centre) < arm_half) & (v >= 0.175)
        _paint(image, arm & (v < sleeve_end), field)
        _paint(image, arm & (v >= sleeve_end) & (v < 0.5), person.skin)
    return top_half, bottom_half


def _draw_head(image: np.ndarray, person: Identity, pose: Pose, u: np.ndarray, v: np.ndarray) -> None:
    """Neck, head, hair (covering the whole head from behind) and an optional cap."""
    facing = {View.FRONT: 0.0, View.BACK: 0.0, View.LEFT: -1.0, View.RIGHT: 1.0}[pose.view]
    if person.long_hair and pose.view != View.FRONT:
        _paint(image, _box(u, v, -0.05 - 0.02 * facing, 0.05 - 0.02 * facing, 0.08, 0.24), person.hair)
    _paint(image, _box(u, v, -0.022, 0.022, 0.13, 0.18), person.skin)
    head = _ellipse(u, v, 0.0, 0.085, 0.05, 0.07)
    _paint(image, head, person.skin)
    if pose.view == View.BACK:
        hair = head
    elif pose.view == View.FRONT:
        hair = head & ((v < 0.06) | (person.long_hair & (np.abs(u) > 0.035)))
    else:
        hair = head & ((v < 0.06) | (u * facing < -0.01))
    _paint(image, hair, person.hair)
    if person.hat is not None:
        _paint(image, _ellipse(u, v, 0.0, 0.05, 0.056, 0.04) & (v < 0.055), person.hat)
        _paint(image, _box(u, v, -0.06 + 0.03 * facing, 0.06 + 0.05 * facing, 0.045, 0.058), person.hat)


def _draw_accessories(image, person: Identity, pose: Pose, u, v, top_half: float, bottom_half: float):
    """Bag and chest logo, whose visibility depends on the viewpoint."""
    if person.bag_kind == "backpack":
        if pose.view == View.BACK:
            _paint(image, _box(u, v, -0.085 * person.width, 0.085 * person.width, 0.2, 0.44), person.bag)
        elif pose.view == View.FRONT:
            straps = (np.abs(np.abs(u) - 0.065 * person.width) < 0.012) & (v >= 0.17) & (v < 0.36)
            _paint(image, straps, person.bag)
        else:
            back = -1.0 if pose.view == View.RIGHT else 1.0
            _paint(
                image,
                (u * back > top_half - 0.01) & (u * back < top_half + 0.07) & _box(u, v, -1, 1, 0.2, 0.44),
                person.bag,
            )
    elif person.bag_kind == "shoulder":
        # The person's right side is on the image's left from the front, on the right from behind.
        image_side = {View.FRONT: -1, View.BACK: 1}.get(pose.view)
        if image_side is not None:
            side = image_side * person.bag_side
            bag = (u * side > bottom_half) & (u * side < bottom_half + 0.075) & (v >= 0.42) & (v < 0.56)
            strap = np.abs(u - side * (-top_half + 2 * top_half * (v - 0.17) / 0.25)) < 0.011
            _paint(image, bag | (strap & (v >= 0.17) & (v < 0.42)), person.bag)
        elif (pose.view == View.RIGHT) == (person.bag_side == 1):  # the bag's side faces the camera
            _paint(image, _box(u, v, -0.05, 0.05, 0.42, 0.56), person.bag)
    if person.logo is not None and pose.view == View.FRONT:
        _paint(image, _box(u, v, -0.035, 0.035, 0.23, 0.3), person.logo)


def draw_person(image: np.ndarray, person: Identity, pose: Pose) -> None:
    """Paint ``person`` in ``pose`` over ``image`` (H x W x 3 float, modified in place)."""
    u = (_XX - pose.center_x) / pose.height
    v = (_YY - pose.top) / pose.height
    _draw_legs(image, person, pose, u, v)
    top_half, bottom_half = _draw_torso_and_arms(image, person, pose, u, v)
    _draw_head(image, person, pose, u, v)
    _draw_accessories(image, person, pose, u, v, top_half, bottom_half)


def background_crop(camera: CameraStyle, rng: np.random.Generator) -> np.ndarray:
    """A crop of the camera's scene texture at a random offset (a fresh, writable array)."""
    bh, bw, _ = camera.background.shape
    y = int(rng.integers(0, bh - CROP_HEIGHT + 1))
    x = int(rng.integers(0, bw - CROP_WIDTH + 1))
    return camera.background[y : y + CROP_HEIGHT, x : x + CROP_WIDTH].copy()


def apply_camera(image: np.ndarray, camera: CameraStyle, rng: np.random.Generator) -> Image.Image:
    """Colour cast, exposure, gamma, illumination gradient, blur and sensor noise of ``camera``."""
    light = 1.0 + camera.light_slope * (_XX[..., None] / CROP_WIDTH - 0.5)
    exposure = rng.uniform(-0.04, 0.04)  # small per-frame flicker
    out = (image * camera.gain * light - 0.5) * camera.contrast + 0.5 + camera.brightness + exposure
    out = np.clip(out, 0.0, 1.0) ** camera.gamma
    blurred = Image.fromarray((out * 255.0 + 0.5).astype(np.uint8))
    blurred = blurred.filter(ImageFilter.GaussianBlur(camera.blur_radius))
    pixels = np.asarray(blurred, dtype=np.float32)
    pixels += rng.normal(0.0, camera.noise_sigma * 255.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of ``image`` (deterministic for a given Pillow/libjpeg build)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
