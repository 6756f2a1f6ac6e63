"""What a synthetic person and a synthetic camera look like: sampled, seeded parameters.

An :class:`Identity` is the part of a person that stays fixed across cameras (clothes, colours,
bag, hat, body shape, skin and hair). A :class:`CameraStyle` is what changes between cameras
(colour cast, exposure, blur, noise, JPEG quality, the background and which way people walk
past it). Rendering (``render.py``) combines one of each with a per-image pose.

Colours are float RGB in [0, 1]. Clothing colours come from a small palette with a skewed
prior (dark and grey clothes are common, as in Market-1501), so many people share colours and
identity has to be read from the combination of details, not from one colour.

Cameras are drawn from a :class:`CameraPrior`, the look of a whole domain: :data:`MARKET_CAMERAS`
(street scenes: walls, bricks, foliage, casts either way) for the synthetic Market-1501 tree and
:data:`DUKE_CAMERAS` (a winter campus: snow, paving, hedges, cool casts, bright exposure) for the
synthetic DukeMTMC-reID tree (``duke_tree.py``), so that the two trees form two domains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class View(IntEnum):
    """Which way the person faces relative to the camera."""

    FRONT = 0
    BACK = 1
    LEFT = 2  # walking towards the image's left edge: the camera sees the person's left side
    RIGHT = 3


# (name, RGB, prior weight). Weights roughly follow what people wear in street footage.
_CLOTHING_PALETTE: tuple[tuple[str, tuple[float, float, float], float], ...] = (
    ("black", (0.08, 0.08, 0.09), 5.0),
    ("charcoal", (0.25, 0.25, 0.27), 3.0),
    ("grey", (0.52, 0.52, 0.52), 3.0),
    ("white", (0.90, 0.90, 0.88), 3.0),
    ("navy", (0.10, 0.14, 0.35), 3.0),
    ("blue", (0.20, 0.38, 0.75), 2.0),
    ("denim", (0.28, 0.36, 0.52), 3.0),
    ("red", (0.75, 0.12, 0.12), 1.5),
    ("green", (0.18, 0.50, 0.22), 1.0),
    ("olive", (0.40, 0.42, 0.20), 1.0),
    ("yellow", (0.90, 0.80, 0.20), 1.0),
    ("brown", (0.40, 0.26, 0.15), 1.5),
    ("beige", (0.80, 0.72, 0.56), 1.5),
    ("pink", (0.92, 0.55, 0.65), 1.0),
    ("purple", (0.45, 0.22, 0.55), 0.8),
    ("orange", (0.92, 0.50, 0.15), 0.8),
)
_PALETTE_RGB = np.array([c for _, c, _ in _CLOTHING_PALETTE], dtype=np.float32)
_PALETTE_P = np.array([w for *_, w in _CLOTHING_PALETTE], dtype=np.float64)
_PALETTE_P /= _PALETTE_P.sum()

_SKIN_TONES = np.array(
    [(0.96, 0.80, 0.69), (0.88, 0.68, 0.53), (0.76, 0.57, 0.42), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16)],
    dtype=np.float32,
)
_HAIR_TONES = np.array(
    [(0.05, 0.04, 0.04), (0.22, 0.14, 0.08), (0.45, 0.30, 0.15), (0.80, 0.68, 0.40), (0.60, 0.60, 0.60)],
    dtype=np.float32,
)
_HAIR_P = np.array([0.45, 0.25, 0.12, 0.1, 0.08])

PATTERNS = ("plain", "stripes", "checks")
LOWER_KINDS = ("trousers", "shorts", "skirt")
BAG_KINDS = ("none", "backpack", "shoulder")
BACKGROUND_KINDS = ("wall_floor", "bricks", "foliage")


@dataclass(frozen=True)
class Identity:
    """Appearance that identifies a person in every camera."""

    upper: np.ndarray  # RGB of the top
    upper_second: np.ndarray  # second colour of a striped/checked top
    upper_pattern: str  # one of PATTERNS
    pattern_period: float  # stripe period in body-height units
    short_sleeves: bool
    lower: np.ndarray
    lower_kind: str  # one of LOWER_KINDS
    shoes: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    hat: np.ndarray | None  # cap colour, None without a hat
    bag_kind: str  # one of BAG_KINDS
    bag: np.ndarray
    bag_side: int  # +1: on the person's right, -1: on the left (shoulder bag)
    logo: np.ndarray | None  # chest print seen only from the front
    height: float  # relative body height (fraction of the crop the person fills)
    width: float  # relative body width


@dataclass(frozen=True)
class CameraStyle:
    """How one camera renders everybody it sees."""

    gain: np.ndarray  # per-channel colour cast multiplier
    contrast: float
    brightness: float
    gamma: float
    light_slope: float  # left-to-right illumination gradient
    blur_radius: float  # Gaussian blur in pixels
    noise_sigma: float  # additive Gaussian noise, in [0, 1] intensity units
    jpeg_quality: int
    view_probs: np.ndarray  # probabilities of View.FRONT, BACK, LEFT, RIGHT
    background: np.ndarray  # float RGB texture, larger than a crop; crops are cut at random offsets


def _clothing_colour(rng: np.random.Generator) -> np.ndarray:
    """A palette colour with a small per-person shade jitter."""
    base = _PALETTE_RGB[rng.choice(len(_PALETTE_RGB), p=_PALETTE_P)]
    shade = rng.uniform(0.85, 1.15)
    return np.clip(base * shade + rng.normal(0.0, 0.03, 3), 0.0, 1.0).astype(np.float32)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's clothes, accessories and body shape."""
    upper = _clothing_colour(rng)
    pattern = PATTERNS[rng.choice(3, p=[0.6, 0.25, 0.15])]
    second = _clothing_colour(rng)
    has_hat = rng.random() < 0.2
    has_logo = rng.random() < 0.35
    return Identity(
        upper=upper,
        upper_second=second,
        upper_pattern=pattern,
        pattern_period=float(rng.uniform(0.035, 0.06)),
        short_sleeves=bool(rng.random() < 0.4),
        lower=_clothing_colour(rng),
        lower_kind=LOWER_KINDS[rng.choice(3, p=[0.7, 0.18, 0.12])],
        shoes=_clothing_colour(rng) * np.float32(0.6),
        skin=np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 0.02, 3), 0, 1).astype(
            np.float32
        ),
        hair=_HAIR_TONES[rng.choice(len(_HAIR_TONES), p=_HAIR_P)],
        long_hair=bool(rng.random() < 0.35),
        hat=_clothing_colour(rng) if has_hat else None,
        bag_kind=BAG_KINDS[rng.choice(3, p=[0.45, 0.3, 0.25])],
        bag=_clothing_colour(rng),
        bag_side=int(rng.choice([-1, 1])),
        logo=_clothing_colour(rng) if has_logo else None,
        height=float(rng.uniform(0.86, 1.0)),
        width=float(rng.uniform(0.82, 1.22)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    gh, gw = shape[0] // cell + 2, shape[1] // cell + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    y = np.arange(shape[0], dtype=np.float32) / cell
    x = np.arange(shape[1], dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _tinted_grey(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(0.2, 0.8)
    return np.clip(grey * (1.0 + rng.normal(0.0, 0.18, 3)), 0.0, 1.0).astype(np.float32)


def sample_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A camera's scene texture, ``height x width x 3`` floats, of one of BACKGROUND_KINDS."""
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    # Mostly greyish scenes with a tint, like streets and campuses; saturated scenes are rare.
    base = _tinted_grey(rng)
    other = _tinted_grey(rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = _smooth_noise(rng, (height, width), cell=int(rng.integers(6, 20)))[..., None]
    if kind == "wall_floor":
        horizon = height * rng.uniform(0.45, 0.7)
        panel = ((xx // rng.integers(8, 24)) % 2)[..., None] * 0.06
        wall = base * (0.9 + panel) * (0.85 + 0.3 * texture)
        floor = other * (0.8 + 0.4 * (yy / height))[..., None] * (0.9 + 0.2 * texture)
        image = np.where((yy < horizon)[..., None], wall, floor)
    elif kind == "bricks":
        brick_h, brick_w = int(rng.integers(5, 10)), int(rng.integers(10, 22))
        row = yy // brick_h
        col = (xx + (row % 2) * brick_w / 2) // brick_w
        mortar = ((yy % brick_h) < 1) | (((xx + (row % 2) * brick_w / 2) % brick_w) < 1)
        shade = (0.85 + 0.3 * ((row * 7 + col * 13) % 5) / 4)[..., None]
        image = np.where(mortar[..., None], other, base * shade)
    else:
        image = base * (1 - texture) + other * texture
    return np.clip(image, 0.0, 1.0).astype(np.float32)


_CAMPUS_PALETTE = np.array(
    [
        (0.86, 0.89, 0.94),  # snow
        (0.74, 0.78, 0.84),  # trodden snow
        (0.22, 0.36, 0.20),  # hedge green
        (0.32, 0.42, 0.26),  # winter lawn
        (0.58, 0.36, 0.28),  # brick paving
        (0.70, 0.64, 0.52),  # sandstone
        (0.30, 0.31, 0.34),  # asphalt
    ],
    dtype=np.float32,
)
CAMPUS_BACKGROUND_KINDS = ("snow_lawn", "paving", "hedge")


def _campus_colour(rng: np.random.Generator) -> np.ndarray:
    base = _CAMPUS_PALETTE[rng.integers(len(_CAMPUS_PALETTE))]
    return np.clip(base * rng.uniform(0.9, 1.1) + rng.normal(0.0, 0.03, 3), 0.0, 1.0).astype(np.float32)


def sample_campus_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A winter-campus scene texture, ``height x width x 3`` floats, of one of CAMPUS_BACKGROUND_KINDS:
    snow with dark tree trunks, large paving slabs, or a hedge above a path."""
    kind = CAMPUS_BACKGROUND_KINDS[rng.integers(len(CAMPUS_BACKGROUND_KINDS))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = _smooth_noise(rng, (height, width), cell=int(rng.integers(4, 12)))[..., None]
    if kind == "snow_lawn":
        snow = _CAMPUS_PALETTE[0] * rng.uniform(0.92, 1.05) * (0.94 + 0.1 * texture)
        period, trunk = int(rng.integers(14, 30)), int(rng.integers(2, 5))
        trunks = ((xx + rng.integers(period)) % period < trunk) & (yy < height * rng.uniform(0.3, 0.55))
        image = np.where(trunks[..., None], np.float32(0.18) * (0.8 + 0.4 * texture), snow)
    elif kind == "paving":
        first, second = _campus_colour(rng), _campus_colour(rng)
        slab = int(rng.integers(10, 20))
        checker = ((yy // slab + xx // slab) % 2)[..., None]
        joints = ((yy % slab) < 1) | ((xx % slab) < 1)
        image = (first * (1 - checker) + second * checker) * (0.9 + 0.2 * texture)
        image = np.where(joints[..., None], np.float32(0.5) * first, image)
    else:
        hedge = _CAMPUS_PALETTE[2] * (0.6 + 0.8 * texture)
        path = _campus_colour(rng) * (0.9 + 0.2 * (yy / height))[..., None]
        image = np.where((yy < height * rng.uniform(0.4, 0.65))[..., None], hedge, path)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class CameraPrior:
    """The ranges a domain's cameras are drawn from (uniform in ``[low, high)``; ``gain`` per channel)."""

    gain: tuple[tuple[float, float, float], tuple[float, float, float]]
    contrast: tuple[float, float]
    brightness: tuple[float, float]
    gamma: tuple[float, float]
    light_slope: tuple[float, float]
    blur_radius: tuple[float, float]
    noise_sigma: tuple[float, float]
    jpeg_quality: tuple[int, int]
    background: Callable[[np.random.Generator, int, int], np.ndarray]


MARKET_CAMERAS = CameraPrior(
    gain=((0.65, 0.65, 0.65), (1.35, 1.35, 1.35)),
    contrast=(0.6, 1.3),
    brightness=(-0.15, 0.15),
    gamma=(0.7, 1.4),
    light_slope=(-0.35, 0.35),
    blur_radius=(0.3, 1.3),
    noise_sigma=(0.0, 0.05),
    jpeg_quality=(55, 95),
    background=sample_background,
)
"""Street cameras with casts in every direction (the synthetic Market-1501 tree)."""

DUKE_CAMERAS = CameraPrior(
    gain=((0.70, 0.85, 1.00), (1.00, 1.15, 1.40)),  # cool: red damped, blue boosted
    contrast=(0.6, 1.05),  # flat winter light
    brightness=(0.0, 0.18),  # bright, snow-lit exposure
    gamma=(0.75, 1.15),
    light_slope=(-0.5, 0.5),
    blur_radius=(0.5, 1.5),
    noise_sigma=(0.01, 0.06),
    jpeg_quality=(50, 90),
    background=sample_campus_background,
)
"""Winter-campus cameras (the synthetic DukeMTMC-reID tree): cool casts, bright exposure, low contrast."""


def sample_camera(
    rng: np.random.Generator, crop_height: int, crop_width: int, prior: CameraPrior = MARKET_CAMERAS
) -> CameraStyle:
    """Draw one camera of ``prior``'s domain: strong enough a style that raw pixels do not match across
    cameras."""
    views = rng.dirichlet(np.full(4, 0.8))
    return CameraStyle(
        gain=rng.uniform(np.array(prior.gain[0]), np.array(prior.gain[1]), 3).astype(np.float32),
        contrast=float(rng.uniform(*prior.contrast)),
        brightness=float(rng.uniform(*prior.brightness)),
        gamma=float(rng.uniform(*prior.gamma)),
        light_slope=float(rng.uniform(*prior.light_slope)),
        blur_radius=float(rng.uniform(*prior.blur_radius)),
        noise_sigma=float(rng.uniform(*prior.noise_sigma)),
        jpeg_quality=int(rng.integers(*prior.jpeg_quality)),
        view_probs=(0.7 * views + 0.3 / 4).astype(np.float64),
        background=prior.background(rng, 2 * crop_height, 2 * crop_width),
    )
