"""The embedded default dataset: a miniature CelebA of faces drawn with OpenCV.

Each face is a small 3D model (an ellipsoid head carrying a drawn texture, a wedge nose, ears,
hair, neck and shoulders), turned by a known yaw, lit from a known direction and projected into
a 178x218 frame placed like CelebA's aligned faces. `render_celeba` writes the real CelebA file
layout and formats plus `truth.csv`, so every CelebA reader and labeller runs on it unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing
import multiprocessing.pool
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facelab.data.celeba_names import ALIGNED_SIZE, ATTRIBUTES, LANDMARK_COLUMNS
from facelab.io import atomic_write_csv, atomic_write_text

MARKER = "facelab_synth.json"  # written into every render_celeba folder; marks it as ours
_GENERATOR = "facelab.data.synthetic.render_celeba"
IMAGE_DIR = "img_align_celeba"
LIGHT_KINDS = ("directional", "flat", "two_sided")
TRUTH_COLUMNS = (
    "image_id", "identity", "yaw", "orientation", "light_azimuth", "light_kind", "light",
    "male", "skin", "background",
)  # fmt: skip

EYE_ANCHOR = (89.0, 111.0)  # where the eyes' midpoint lands in the 178x218 frame at shift 0
TEX_RES = 2.0  # texture pixels per face unit (a face unit is one image pixel at scale 1)
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_WRAP = 0.4  # how far (in cosine) light wraps round past the shadow line
_BOUNCE = 0.6  # ambient light is up to this much brighter on the lamp's side
_ONE = 1 << _SHIFT

HAIR_RGB = {
    "black": (28, 22, 20),
    "brown": (92, 60, 36),
    "blond": (212, 176, 112),
    "gray": (168, 166, 160),
    "auburn": (132, 54, 28),
}
_SKIN_STOPS = np.array(
    [[62, 40, 30], [118, 78, 54], [178, 128, 94], [224, 180, 148], [246, 214, 194]], np.float32
)
_BEARDS = ("none", "stubble", "full", "goatee", "mustache")

# Attributes not drawn: (prevalence in CelebA) -> a per-identity probability around it.
_RANDOM_ATTRIBUTES = {
    "Attractive": 0.51, "Bags_Under_Eyes": 0.20, "Double_Chin": 0.05, "High_Cheekbones": 0.45,
    "Oval_Face": 0.28, "Pointy_Nose": 0.28, "Straight_Hair": 0.21, "Wavy_Hair": 0.32,
    "Wearing_Hat": 0.05,
}  # fmt: skip


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Identity:
    """What stays the same in every photo of one person (shape, skin, hair, habits)."""

    identity: int
    male: bool
    young: bool
    skin: float  # 0 dark .. 1 light
    skin_rgb: tuple[int, int, int]
    head: tuple[float, float, float]  # ellipsoid semi-axes (width, height, depth), face units
    taper: float  # how much narrower the jaw is than the temples
    eye_y: float  # eyes' height relative to the head centre
    eye_dist: float  # interocular distance
    eye_size: float
    narrow_eyes: bool
    iris_rgb: tuple[int, int, int]
    brow_thick: float
    arched_brows: bool
    nose_len: float
    nose_width: float
    nose_depth: float
    mouth_drop: float  # mouth height below the eyes
    mouth_width: float
    lip_size: float
    hair: str  # a HAIR_RGB key
    hair_style: str  # short, long, bald, receding
    bangs: bool
    beard: str  # one of _BEARDS
    chubby: bool
    glasses_p: float
    lipstick_p: float
    makeup_p: float
    rosy_p: float
    earrings_p: float
    necklace_p: float
    necktie_p: float
    clothes_rgb: tuple[int, int, int]
    random_p: tuple[tuple[str, float], ...]  # per-identity odds of the attributes not drawn


@dataclass(frozen=True)
class Look:
    """What changes from photo to photo: pose, light, expression, accessories, background."""

    yaw: float
    light_azimuth: float
    light_kind: str  # directional, flat, two_sided
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    light_elevation: float = 15.0
    light_distance: float = 300.0  # lamp to head centre, face units (a head is ~135 high)
    ambient: float = 0.2
    exposure: float = 1.0
    light_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    smiling: bool = False
    mouth_open: bool = False
    glasses: bool = False
    lipstick: bool = False
    makeup: bool = False
    rosy: bool = False
    earrings: bool = False
    necklace: bool = False
    necktie: bool = False
    blurry: bool = False
    background: str = "plain"
    background_level: float = 128.0
    jpeg_quality: int = 90


def orientation_class(yaw: float) -> str:
    """Truth class of a yaw in degrees: left below -10, right above 10, else center."""
    return "left" if yaw < -10 else "right" if yaw > 10 else "center"


def light_class(kind: str, azimuth: float) -> str:
    """Truth class of a light: positive azimuth lights the image's left; flat/two-sided are center."""
    if kind != "directional" or abs(azimuth) < 14:
        return "center"
    return "left" if azimuth > 0 else "right"


def sample_yaw(rng: np.random.Generator) -> float:
    """Yaw in degrees: mostly in clear bands (+-15..45, +-6), 15% in the ambiguous bands between."""
    u = rng.random()
    if u < 0.15:
        return float(rng.choice([-1, 1]) * rng.uniform(6, 15))
    band = int(rng.integers(3))
    return float((-45, -6, 15)[band] + rng.random() * (30, 12, 30)[band])


def sample_light(rng: np.random.Generator) -> tuple[str, float]:
    """(kind, azimuth): 10% flat, 5% two-sided, else directional from the left, centre or right.

    A two-sided light's azimuth is where its two lamps stand (+- azimuth); flat light has none (0).
    """
    u = rng.random()
    if u < 0.10:
        return "flat", 0.0
    if u < 0.15:
        return "two_sided", float(rng.uniform(35, 90))
    return "directional", _directional_azimuth(rng)


def _directional_azimuth(rng: np.random.Generator) -> float:
    """Left (+20..110), frontal (-8..8) or right (-110..-20), a third each."""
    side = int(rng.integers(3))
    if side == 1:
        return float(rng.uniform(-8, 8))
    return float((1, 0, -1)[side] * rng.uniform(20, 110))


def _skin_rgb(skin: float, rng: np.random.Generator) -> tuple[int, int, int]:
    pos = skin * (len(_SKIN_STOPS) - 1)
    i = min(int(pos), len(_SKIN_STOPS) - 2)
    rgb = _SKIN_STOPS[i] + (pos - i) * (_SKIN_STOPS[i + 1] - _SKIN_STOPS[i])
    rgb = rgb * rng.uniform(0.95, 1.05, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _hair_colour(rng: np.random.Generator, skin: float, young: bool) -> str:
    if not young and rng.random() < 0.45:
        return "gray"
    p = np.array([0.36, 0.32, 0.10 + 0.25 * skin, 0.0, 0.10])
    return str(rng.choice(list(HAIR_RGB), p=p / p.sum()))


def _beard(rng: np.random.Generator, male: bool) -> str:
    if not male:
        return "none"
    return str(rng.choice(_BEARDS, p=[0.40, 0.25, 0.15, 0.12, 0.08]))


def sample_identity(rng: np.random.Generator, identity: int, male: bool | None = None) -> Identity:
    """Draw one person's fixed traits; `male` forces the gender."""
    male = bool(rng.random() < 0.42) if male is None else bool(male)
    young = bool(rng.random() < 0.77)
    skin = float(np.clip(rng.beta(1.4, 1.0), 0, 1))
    chubby = bool(rng.random() < 0.07)
    a = rng.uniform(47, 53) + (5 if chubby else 0) + (2 if male else 0)
    b = rng.uniform(63, 71)
    hair = _hair_colour(rng, skin, young)
    if male:
        style = str(rng.choice(["short", "receding", "bald"], p=[0.84, 0.11, 0.05]))
        style = "short" if young and style == "bald" else style
    else:
        style = "long"
    big_nose, big_lips = rng.random() < 0.23, rng.random() < 0.24
    glasses_p = 0.8 if rng.random() < 0.1 else 0.0
    female_p = 0.0 if male else 1.0
    return Identity(
        identity=int(identity),
        male=male,
        young=young,
        skin=round(skin, 3),
        skin_rgb=_skin_rgb(skin, rng),
        head=(float(a), float(b), float(a * rng.uniform(0.95, 1.05))),
        taper=float(rng.uniform(0.12, 0.22) - (0.04 if male else 0)),
        eye_y=float(rng.uniform(-7, -3)),
        eye_dist=float(rng.uniform(35, 40)),
        eye_size=float(rng.uniform(5.8, 7.0)),
        narrow_eyes=bool(rng.random() < 0.12),
        iris_rgb=tuple(
            int(v)
            for v in rng.choice(
                [[60, 38, 22], [40, 28, 20], [70, 100, 130], [80, 95, 60]], p=[0.5, 0.3, 0.12, 0.08]
            )
        ),
        brow_thick=float(rng.uniform(2.6, 3.4) + (1.2 if male else 0)),
        arched_brows=bool(not male and rng.random() < 0.45),
        nose_len=float(rng.uniform(21, 25) + (2 if big_nose else 0)),
        nose_width=float(rng.uniform(5.0, 6.3) + (1.6 if big_nose else 0)),
        nose_depth=float(rng.uniform(17, 21) + (3 if big_nose else 0)),
        mouth_drop=float(rng.uniform(40, 44)),
        mouth_width=float(rng.uniform(29, 35)),
        lip_size=float(rng.uniform(2.2, 3.0) + (1.3 if big_lips else 0)),
        hair=hair,
        hair_style=style,
        bangs=bool(not male and rng.random() < 0.2),
        beard=_beard(rng, male),
        chubby=chubby,
        glasses_p=glasses_p,
        lipstick_p=female_p * float(rng.uniform(0.4, 1.0)) if rng.random() < 0.8 else 0.0,
        makeup_p=female_p * float(rng.uniform(0.3, 0.9)),
        rosy_p=float(rng.uniform(0.1, 0.5)) if rng.random() < 0.15 else 0.0,
        earrings_p=female_p * float(rng.uniform(0.5, 1.0)) if rng.random() < 0.4 else 0.0,
        necklace_p=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.15 else 0.0,
        necktie_p=float(rng.uniform(0.4, 1.0)) if male and rng.random() < 0.2 else 0.0,
        clothes_rgb=tuple(int(v) for v in rng.integers(15, 235, 3)),
        random_p=tuple(
            (name, float(rng.beta(4 * p + 0.2, 4 * (1 - p) + 0.2)))
            for name, p in _RANDOM_ATTRIBUTES.items()
        ),
    )


def sample_look(
    rng: np.random.Generator,
    identity: Identity,
    yaw: float | None = None,
    light_azimuth: float | None = None,
    light_kind: str | None = None,
) -> Look:
    """Draw one photo's pose, light, expression, accessories and background (given ones kept)."""
    yaw = sample_yaw(rng) if yaw is None else float(yaw)
    if light_kind is None and light_azimuth is None:
        light_kind, light_azimuth = sample_light(rng)
    light_kind = light_kind or "directional"
    if light_kind not in LIGHT_KINDS:
        raise ValueError(f"light_kind must be one of {LIGHT_KINDS}, not {light_kind!r}")
    if light_azimuth is None:
        light_azimuth = _directional_azimuth(rng) if light_kind == "directional" else 60.0
    azimuth = 0.0 if light_kind == "flat" else float(light_azimuth)
    if light_kind == "two_sided":
        azimuth = abs(azimuth)
    smiling = bool(rng.random() < 0.48)
    p = identity
    return Look(
        yaw=yaw,
        light_azimuth=azimuth,
        light_kind=light_kind,
        pitch=float(rng.uniform(-6, 6)),
        roll=float(np.clip(rng.normal(0, 3), -8, 8)),
        scale=float(rng.uniform(0.87, 1.13)),
        shift=(float(rng.normal(0, 2.5)), float(rng.normal(0, 2.0))),
        light_elevation=float(rng.uniform(-10, 30)),
        light_distance=float(rng.uniform(180, 400)),
        ambient=float(rng.uniform(0.05, 0.32)),
        exposure=float(rng.uniform(0.8, 1.1)),
        light_rgb=tuple(float(v) for v in 1 + rng.uniform(-0.08, 0.08, 3)),
        smiling=smiling,
        mouth_open=bool(rng.random() < (0.62 if smiling else 0.25)),
        glasses=bool(rng.random() < p.glasses_p),
        lipstick=bool(rng.random() < p.lipstick_p),
        makeup=bool(rng.random() < p.makeup_p),
        rosy=bool(rng.random() < p.rosy_p),
        earrings=bool(rng.random() < p.earrings_p),
        necklace=bool(rng.random() < p.necklace_p),
        necktie=bool(rng.random() < p.necktie_p),
        blurry=bool(rng.random() < 0.05),
        background=str(
            rng.choice(
                ["plain", "vgradient", "hgradient", "noise", "scene"], p=[0.3, 0.2, 0.15, 0.2, 0.15]
            )
        ),
        background_level=float(rng.uniform(15, 240)),
        jpeg_quality=int(rng.integers(70, 96)),
    )


# ----------------------------------------------------------------------------- colour & light

_LINEAR = (np.arange(256, dtype=np.float32) / 255) ** 2.2  # sRGB byte -> linear
_SRGB = (255 * np.linspace(0, 1, 4096) ** (1 / 2.2) + 0.5).astype(np.uint8)  # linear -> byte


def _to_linear(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return _LINEAR[rgb]
    return (np.clip(rgb.astype(np.float32), 0, 255) / 255) ** 2.2


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    return _SRGB[(np.clip(lin, 0, 1) * 4095).astype(np.int32)]


@dataclass(frozen=True)
class _Lights:
    directions: tuple[np.ndarray, ...]  # unit vectors towards each lamp (x right, y down, z viewer)
    strength: float
    ambient: float
    colour: np.ndarray
    distance: float  # lamps stand this far from the head centre (face units); inf: far away
    bounce: float  # how much brighter the ambient light is on the lamps' side (0: uniform)


def _light_vector(azimuth: float, elevation: float) -> np.ndarray:
    az, el = np.radians(azimuth), np.radians(elevation)
    # Positive azimuth stands the lamp on the image's left (Extended Yale B's convention).
    return np.array([-np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el)], np.float32)


def _lights(look: Look) -> _Lights:
    """The lamps of a photo, scaled so that a fully lit surface reaches about `exposure`."""
    if look.light_kind == "flat":
        directions, strength, ambient = (_light_vector(0.0, 10.0),), 0.25, 0.55 + look.ambient
    elif look.light_kind == "two_sided":
        az, el = look.light_azimuth, look.light_elevation
        directions, strength = (_light_vector(az, el), _light_vector(-az, el)), 0.65
        ambient = look.ambient
    else:
        directions = (_light_vector(look.light_azimuth, look.light_elevation),)
        strength, ambient = 1.0, look.ambient
    distance = np.inf if look.light_kind == "flat" else look.light_distance
    near = (distance / (distance - 30.0)) ** 2 if np.isfinite(distance) else 1.0  # nearest cheek
    peak = ambient + strength * near * (1.2 if len(directions) == 2 else 1.0)
    colour = np.asarray(look.light_rgb, np.float32) * (look.exposure / peak)
    bounce = 0.0 if look.light_kind == "flat" else _BOUNCE
    return _Lights(directions, strength, ambient, colour, distance, bounce)


def _dot(v, u) -> np.ndarray:
    return v[0] * u[0] + v[1] * u[1] + v[2] * u[2]


def _shade(normals, albedo, lights: _Lights, shine=None, shadows=None, points=None) -> np.ndarray:
    """Lambert + Blinn-Phong: radiance (..., 3) of surfaces with unit `normals` (nx, ny, nz).

    With `points` (world x, y, z in face units) the lamps are point lights with 1/d^2 fall-off.
    """
    mean_light = sum(lights.directions) * np.float32(lights.bounce / len(lights.directions))
    # The room the lamp lights bounces some of it back: ambient is brighter on the lamp's side.
    light_sum = lights.ambient * (1 + _dot(normals, mean_light))
    specular = 0.0
    for k, light in enumerate(lights.directions):
        if points is None or not np.isfinite(lights.distance):
            cosine, fall = _dot(normals, light), np.float32(1)
        else:
            towards = [np.float32(lights.distance * light[i]) - points[i] for i in range(3)]
            inv_d2 = 1 / _dot(towards, towards)
            cosine = _dot(normals, towards) * np.sqrt(inv_d2)
            fall = inv_d2 * np.float32(lights.distance**2)
        # "Wrap" Lambert: skin and soft lamps light a little past the terminator.
        lit = np.maximum(cosine + _WRAP, 0) * (fall * np.float32(1 / (1 + _WRAP)))
        if shadows is not None and shadows[k] is not None:
            lit *= 1 - shadows[k]
        light_sum = light_sum + lit * np.float32(lights.strength)
        if shine is not None:
            half = light + np.array([0, 0, 1], np.float32)
            highlight = np.maximum(_dot(normals, half / np.linalg.norm(half)), 0)
            for _ in range(5):  # ** 32
                highlight = highlight * highlight
            specular = specular + highlight * np.clip(cosine * 8, 0, 1)
    radiance = albedo * light_sum[..., None]
    if shine is not None:
        radiance += (np.float32(0.14 * lights.strength) * shine * specular)[..., None]
    return radiance * lights.colour


# ----------------------------------------------------------------------------- geometry


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """world = R @ body; negative yaw turns the nose towards the image's left."""
    t, p = np.radians(yaw), np.radians(pitch)
    r_yaw = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    r_pitch = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return (r_pitch @ r_yaw).astype(np.float32)


@dataclass(frozen=True)
class _Camera:
    """Face frame (head centre at 0, y down, z towards the viewer) -> image pixels.

    The head turns (yaw, pitch), its jaw narrows (taper), then roll, scale and shift place it.
    """

    rot: np.ndarray
    eye_y: float
    anchor: tuple[float, float]
    scale: float
    roll: float
    half_height: float  # the head's b, for the jaw taper
    taper: float

    def _narrow(self, y):
        return 1 - self.taper * np.clip(y / self.half_height, 0, 1) ** 2

    def project(self, body: np.ndarray, turn: bool = True, taper: bool = True) -> np.ndarray:
        """Image (x, y) of body points (N, 3); turn=False for parts that do not turn (neck)."""
        body = np.asarray(body, np.float32)
        world = body @ self.rot.T if turn else body
        x, y = world[:, 0], world[:, 1]
        if taper:
            x = x * self._narrow(y)
        return self.to_image(np.stack([x, y], 1))

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Image (x, y) of face-frame (x, y) points (N, 2)."""
        xy = np.asarray(xy, np.float32)
        c, s = math.cos(math.radians(self.roll)), math.sin(math.radians(self.roll))
        x, y = xy[:, 0], xy[:, 1] - self.eye_y
        out_x = self.anchor[0] + self.scale * (c * x - s * y)
        out_y = self.anchor[1] + self.scale * (s * x + c * y)
        return np.stack([out_x, out_y], 1).astype(np.float32)

    def from_image(self, px: np.ndarray, py: np.ndarray, taper: bool = True):
        """Face-frame (x, y) arrays of image pixel positions (inverse of `project` before turning)."""
        c, s = math.cos(math.radians(self.roll)), math.sin(math.radians(self.roll))
        dx, dy = (px - self.anchor[0]) / self.scale, (py - self.anchor[1]) / self.scale
        x, y = c * dx + s * dy, -s * dx + c * dy + self.eye_y
        if taper:
            x = x / self._narrow(y)
        return x, y


def _surface_z(p: Identity, x: float, y: float) -> float:
    a, b, c = p.head
    return float(c * np.sqrt(max(0.0, 1 - (x / a) ** 2 - (y / b) ** 2)))


def _on_head(p: Identity, x: float, y: float, lift: float = 0.0) -> list[float]:
    return [x, y, _surface_z(p, x, y) + lift]


def face_points(p: Identity, look: Look) -> dict[str, np.ndarray]:
    """Body-frame 3D points: the five landmarks and the nose (bridge, tip, wings, base)."""
    ey, half = p.eye_y, p.eye_dist / 2
    ny, my = ey + p.nose_len, ey + p.mouth_drop
    corner_y = my - (1.0 if look.smiling else 0.0)
    return {
        "landmarks": np.array(
            [_on_head(p, -half, ey), _on_head(p, half, ey), _on_head(p, 0, ny, p.nose_depth),
             _on_head(p, -p.mouth_width / 2, corner_y), _on_head(p, p.mouth_width / 2, corner_y)],
            np.float32),
        "nose": np.array(
            [_on_head(p, 0, ey + 3, 1.0), _on_head(p, 0, ny, p.nose_depth),
             _on_head(p, -p.nose_width, ny + 1, 2.0), _on_head(p, p.nose_width, ny + 1, 2.0),
             _on_head(p, 0, ny + 4.0, p.nose_depth * 0.3)],
            np.float32),
    }  # fmt: skip


def _cast_ellipsoid(x, y, axes, rot, centre=(0.0, 0.0, 0.0)):
    """Orthographic ray cast of a rotated ellipsoid at face-frame pixel positions (x, y).

    Returns coverage w (> 0 inside: 1 - min rho^2), body points q, world normals n (both as
    (x, y, z) arrays) and the world depth z of the surface seen at each pixel.
    """
    inv2 = 1.0 / np.square(np.asarray(axes, np.float32))
    d = rot[2, :]  # the view ray (0, 0, 1) in body coordinates
    px, py, pz = x - np.float32(centre[0]), y - np.float32(centre[1]), np.float32(-centre[2])
    o = [rot[0, i] * px + rot[1, i] * py + rot[2, i] * pz for i in range(3)]
    qa = float(np.sum(d * d * inv2))
    qb = 2 * (o[0] * (d[0] * inv2[0]) + o[1] * (d[1] * inv2[1]) + o[2] * (d[2] * inv2[2]))
    qc = o[0] * o[0] * inv2[0] + o[1] * o[1] * inv2[1] + o[2] * o[2] * inv2[2] - 1
    w = qb * qb * np.float32(1 / (4 * qa)) - qc
    t = qb * np.float32(-1 / (2 * qa)) + np.sqrt(np.maximum(w, 0) * np.float32(1 / qa))
    q = [o[i] + t * d[i] for i in range(3)]
    g = [q[i] * inv2[i] for i in range(3)]
    n = [rot[i, 0] * g[0] + rot[i, 1] * g[1] + rot[i, 2] * g[2] for i in range(3)]
    norm = 1 / (np.sqrt(_dot(n, n)) + np.float32(1e-6))
    return w, q, [v * norm for v in n], t + np.float32(centre[2])


def _coverage(w: np.ndarray, radius_px: float) -> np.ndarray:
    """Anti-aliased alpha from an ellipsoid's coverage value (w falls by about 2/r per pixel)."""
    return np.clip(0.5 + w * (radius_px / 2), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- 2D drawing

Box = tuple[slice, slice]


def _fix(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _box(points: np.ndarray, margin: float, shape) -> Box | None:
    """The pixel rows and columns around `points` (N, 2) plus `margin`, clipped to the image."""
    lo = np.floor(np.min(points, 0) - margin).astype(int)
    hi = np.ceil(np.max(points, 0) + margin).astype(int) + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], shape[1]), min(hi[1], shape[0])
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def _poly_alpha(shape, polygons, blur: float = 0.0) -> tuple[Box, np.ndarray] | None:
    """Anti-aliased coverage of filled polygons (pixel coordinates), cut to their box."""
    box = _box(np.concatenate(polygons), 3 * blur + 2, shape)
    if box is None:
        return None
    origin = np.array([box[1].start, box[0].start], np.float32)
    mask = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.uint8)
    cv2.fillPoly(mask, [_fix(p - origin) for p in polygons], 255, cv2.LINE_AA, _SHIFT)
    alpha = mask * np.float32(1 / 255)
    return box, cv2.GaussianBlur(alpha, (0, 0), blur) if blur > 0 else alpha


def _paint(canvas: np.ndarray, box: Box, alpha: np.ndarray, colour) -> None:
    """Blend `colour` ((3,) or (h, w, 3)) over `canvas[box]` with coverage `alpha` (h, w)."""
    region = canvas[box]
    a = alpha[..., None]
    region += a * (colour - region)


def _ellipse_points(centre, axes, start=0, end=360, n=36) -> np.ndarray:
    t = np.radians(np.linspace(start, end, n))
    return np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], 1)


def _smoothstep(v):
    v = np.clip(v, 0, 1)
    return v * v * (3 - 2 * v)


# ----------------------------------------------------------------------------- textures


@dataclass(frozen=True)
class _Texture:
    """Front / back albedo maps of the head (linear RGB + hair mask), indexed by body (x, y)."""

    front: np.ndarray  # (H, W, 4) float32
    back: np.ndarray
    origin: tuple[float, float]  # face units added to body (x, y) before scaling by TEX_RES


class _TexCanvas:
    """A head texture being drawn in sRGB uint8, addressed in face units (body x, y)."""

    def __init__(self, p: Identity, rgb: np.ndarray | None = None):
        a, b, _ = p.head
        self.origin = (a + 6, b + 6)
        size = (int(2 * (b + 6) * TEX_RES), int(2 * (a + 6) * TEX_RES))
        if rgb is None:
            rgb = np.empty((*size, 3), np.uint8)
            rgb[:] = p.skin_rgb
        self.rgb = rgb

    def grid(self, box: Box | None = None):
        """Face-unit coordinates (x (1, w), y (h, 1)) of the texels in `box` (default: all)."""
        box = box or (slice(0, self.rgb.shape[0]), slice(0, self.rgb.shape[1]))
        x = np.arange(box[1].start, box[1].stop, dtype=np.float32) / TEX_RES - self.origin[0]
        y = np.arange(box[0].start, box[0].stop, dtype=np.float32) / TEX_RES - self.origin[1]
        return x[None, :], y[:, None]

    def px(self, points) -> np.ndarray:
        return (np.asarray(points, np.float64).reshape(-1, 2) + self.origin) * TEX_RES

    def scalar(self, v: float) -> int:
        return max(1, int(round(v * TEX_RES)))

    def ellipse(self, centre, axes, colour, thickness=-1, start=0, end=360):
        c = _fix(self.px([centre]))[0, 0]
        ax = (int(axes[0] * TEX_RES * _ONE), int(axes[1] * TEX_RES * _ONE))
        cv2.ellipse(
            self.rgb,
            tuple(int(v) for v in c),
            ax,
            0,
            start,
            end,
            colour,
            thickness,
            cv2.LINE_AA,
            _SHIFT,
        )

    def poly(self, points, colour, closed=True, thickness=-1):
        pts = [_fix(self.px(points))]
        if thickness < 0:
            cv2.fillPoly(self.rgb, pts, colour, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(self.rgb, pts, closed, colour, thickness, cv2.LINE_AA, _SHIFT)

    def blend(self, alpha: np.ndarray, colour, box: Box | None = None) -> None:
        """Blend `colour` ((3,) or (h, w, 3)) with coverage `alpha` into the texels of `box`."""
        region = self.rgb[box] if box is not None else self.rgb
        a = np.clip(alpha, 0, 1)[..., None]
        region[:] = (region + a * (np.asarray(colour, np.float32) - region)).astype(np.uint8)

    def glow(self, centre, radii, colour, strength: float) -> None:
        """A soft Gaussian patch of `colour` (shading of sockets, blush, eye shadow)."""
        box = _box(self.px([centre]), 2.5 * max(radii) * TEX_RES, self.rgb.shape)
        x, y = self.grid(box)
        g = np.exp(-(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2))
        self.blend(strength * g, colour, box)


def _streaks(rng: np.random.Generator, shape, length: int = 9) -> np.ndarray:
    """Hair-like vertical streak noise around 1."""
    noise = rng.random(shape, dtype=np.float32)
    return 0.7 + 0.6 * cv2.blur(noise, (1, length))


def _hairline(p: Identity, x: np.ndarray) -> np.ndarray:
    """Height of the front hairline at body x (hair above it): a curve down the temples."""
    a, b, _ = p.head
    top = p.eye_y + {"short": -36.0, "long": -34.0, "receding": -46.0}.get(p.hair_style, -99)
    if p.bangs:
        top = p.eye_y - 14 + 1.8 * np.sin(x * 0.8)
    u = np.abs(x) / a
    drop = 0.32 * b if p.hair_style == "long" else p.eye_y + 2
    return top + 8 * u**2 + np.maximum(drop - top, 0) * _smoothstep((u - 0.72) / 0.22)


def _draw_hair(t: _TexCanvas, p: Identity, rng: np.random.Generator, back: bool) -> np.ndarray:
    """Paint the hair onto the front or back texture; returns the hair mask (uint8)."""
    a, b, _ = p.head
    x, y = t.grid()
    if p.hair_style == "bald":
        fringe = ((np.abs(x) / a - 1) / 0.3) ** 2 + ((y - p.eye_y + 6) / 16) ** 2 < 1
        band = (y > -0.25 * b) & (y < 0.3 * b)
        mask = band if back else fringe  # a fringe above the ears and round the back
    elif back:
        mask = y < (1.3 * b if p.hair_style == "long" else 0.3 * b)
    else:
        mask = y < _hairline(p, x)
    mask = np.broadcast_to(mask, t.rgb.shape[:2])
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    colour = np.asarray(HAIR_RGB[p.hair], np.float32) * _streaks(rng, soft.shape)[..., None]
    t.blend(soft, np.clip(colour, 0, 255))
    return (soft * 255).astype(np.uint8)


def _draw_eye(t: _TexCanvas, p: Identity, cx: float, cy: float) -> None:
    w = p.eye_size
    h = w * (0.34 if p.narrow_eyes else 0.48)
    t.glow((cx, cy - 1), (w * 1.5, w * 0.9), (60, 35, 30), 0.22)
    t.ellipse((cx, cy), (w, h), (235, 232, 228))
    t.ellipse((cx, cy), (h * 0.95, h * 0.95), p.iris_rgb)
    t.ellipse((cx, cy), (h * 0.42, h * 0.42), (12, 10, 10))
    t.ellipse((cx, cy), (w, h), (30, 22, 20), thickness=t.scalar(1.1), start=180, end=360)
    t.ellipse((cx, cy), (w, h), (90, 60, 55), thickness=t.scalar(0.5), start=0, end=180)


def _draw_brow(t: _TexCanvas, p: Identity, cx: float, side: int) -> None:
    y0 = p.eye_y - 9.5
    lift = 3.5 if p.arched_brows else 1.5
    xs = np.linspace(-8.5, 8.5, 9)
    ys = y0 - lift * (1 - ((xs + side * 2.5) / 9.5) ** 2)
    dark = 0.5 if p.hair in ("blond", "gray") else 0.9
    colour = tuple(int(v * dark) for v in HAIR_RGB[p.hair])
    t.poly(
        np.stack([cx + side * xs, ys], 1), colour, closed=False, thickness=t.scalar(p.brow_thick)
    )


def _draw_beard(t: _TexCanvas, p: Identity, rng: np.random.Generator) -> None:
    a, _, _ = p.head
    ny, my, hw = p.eye_y + p.nose_len, p.eye_y + p.mouth_drop, p.mouth_width / 2
    x, y = t.grid()
    u = np.abs(x) / a
    lip = my - p.lip_size - 0.5  # the top of the upper lip
    top = max(ny + 4.5, lip - 6)
    droop = 5 * _smoothstep((np.abs(x) - 0.6 * hw) / (0.5 * hw))
    mustache = (y > top + droop * 0.4) & (y < lip + droop) & (np.abs(x) < hw + 1.5)
    goatee = (y > my + 2.5) & (np.abs(x) < 0.5 * hw + 0.12 * (y - my))
    jaw = y > top + (p.eye_y + 12 - top) * _smoothstep((u - 0.32) / 0.55)
    region = {"stubble": jaw, "full": jaw, "goatee": goatee | mustache, "mustache": mustache}
    mask = cv2.GaussianBlur(region[p.beard].astype(np.float32), (0, 0), 1.2)
    hair = np.asarray(HAIR_RGB[p.hair], np.float32)
    if p.beard == "stubble":
        grain = cv2.blur(rng.random(mask.shape, dtype=np.float32), (2, 2))
        t.blend(mask * 0.38 * (0.5 + grain), np.minimum(hair, 60) * 0.8)
    else:
        t.blend(mask * 0.92, hair[None, None] * 0.85 * _streaks(rng, mask.shape, 5)[..., None])


@functools.lru_cache(maxsize=32)
def _base_texture(p: Identity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The person's own texture (skin, hair, eyes, brows, beard) before the photo's expression.

    Returns the front in sRGB (H, W, 3) uint8, and front and back as linear RGB + hair (H, W, 4).
    """
    rng = np.random.default_rng([p.identity, 7])
    front, back = _TexCanvas(p), _TexCanvas(p)
    for t in (front, back):
        mottle = cv2.GaussianBlur(rng.normal(0, 1, t.rgb.shape[:2]).astype(np.float32), (0, 0), 6)
        t.rgb[:] = np.clip(t.rgb * (1 + 0.15 * mottle[..., None]), 0, 255).astype(np.uint8)
    half = p.eye_dist / 2
    for side in (-1, 1):
        front.glow((side * (half + 4), p.eye_y + 17), (11, 8), (200, 100, 95), 0.06)
        _draw_eye(front, p, side * half, p.eye_y)
        _draw_brow(front, p, side * half, side)
    if p.beard != "none":
        _draw_beard(front, p, rng)
    front_hair = _draw_hair(front, p, rng, back=False)
    back_hair = _draw_hair(back, p, rng, back=True)
    lin = [
        np.concatenate([_LINEAR[t.rgb], hair[..., None] * np.float32(1 / 255)], -1)
        for t, hair in ((front, front_hair), (back, back_hair))
    ]
    return front.rgb, lin[0], lin[1]


def _draw_mouth(t: _TexCanvas, p: Identity, look: Look) -> None:
    hw, my = p.mouth_width / 2, p.eye_y + p.mouth_drop
    xs = np.linspace(-hw, hw, 17)
    bend = 1 - (xs / hw) ** 2
    line = my + (3.2 * bend - 1.0 if look.smiling else 0.6 * bend)
    gap = (5.5 if look.smiling else 4.0) * bend if look.mouth_open else 0.0 * bend
    upper = line - p.lip_size * (0.6 + 0.4 * bend) + 0.9 * np.exp(-((xs / 2.5) ** 2)) * bend
    lower = line + gap + p.lip_size * 1.3 * bend**0.7
    skin = np.asarray(p.skin_rgb, np.float32)
    lips = (170, 28, 48) if look.lipstick else tuple(int(v) for v in skin * (0.78, 0.55, 0.55))
    t.poly(np.concatenate([np.stack([xs, upper], 1), np.stack([xs, lower], 1)[::-1]]), lips)
    if look.mouth_open:
        inner = np.concatenate([np.stack([xs, line], 1), np.stack([xs, line + gap], 1)[::-1]])
        t.poly(inner, (45, 18, 20))
        teeth = np.concatenate(
            [np.stack([xs * 0.8, line], 1), np.stack([xs * 0.8, line + gap * 0.45], 1)[::-1]]
        )
        t.poly(teeth, (225, 220, 205))
    t.poly(np.stack([xs, line], 1), (60, 25, 25), closed=False, thickness=t.scalar(0.7))


def _face_texture(p: Identity, look: Look) -> _Texture:
    """The head's albedo for one photo: the person's texture plus expression and make-up."""
    f_rgb, f_lin, back = _base_texture(p)
    t = _TexCanvas(p, f_rgb.copy())
    half = p.eye_dist / 2
    for side in (-1, 1):
        if look.rosy:
            t.glow((side * (half + 4), p.eye_y + 17), (8, 6), (215, 60, 75), 0.3)
        if look.makeup:
            t.glow(
                (side * half, p.eye_y - p.eye_size * 0.55),
                (p.eye_size * 1.1, 2.2),
                (95, 50, 80),
                0.5,
            )
    _draw_mouth(t, p, look)
    # Only the eyes-to-chin band changed: convert just that back to linear.
    box = _box(
        t.px([[-half - 24, p.eye_y - 12], [half + 24, p.eye_y + p.mouth_drop + 14]]), 1, t.rgb.shape
    )
    front = f_lin.copy()
    front[box][..., :3] = _LINEAR[t.rgb[box]]
    return _Texture(front, back, t.origin)


def _sample_texture(tex: _Texture, q, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """Texels (..., 4) at body points q = (x, y, z): front map where z >= 0, back map behind."""
    map_x = q[0] * np.float32(sx * TEX_RES) + np.float32(tex.origin[0] * TEX_RES)
    map_y = q[1] * np.float32(sy * TEX_RES) + np.float32(tex.origin[1] * TEX_RES)
    args = (map_x, map_y, cv2.INTER_LINEAR, None, cv2.BORDER_REPLICATE)
    texels = cv2.remap(tex.front, *args)
    behind = q[2] < 0
    if behind.any():
        texels[behind] = cv2.remap(tex.back, *args)[behind]
    return texels


# ----------------------------------------------------------------------------- background


def draw_background(rng: np.random.Generator, kind: str, level: float, size=ALIGNED_SIZE):
    """An sRGB uint8 backdrop (H, W, 3) of mean luminance near `level`, unrelated to the face's light."""
    w, h = size
    hue = rng.normal(0, 35, 3)
    base = np.clip(level + hue - hue.mean(), 0, 255).astype(np.float32)
    other = np.clip(rng.uniform(10, 245) + rng.normal(0, 35, 3), 0, 255).astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    if kind in ("vgradient", "hgradient"):
        ramp = np.linspace(0, 0.8, h if kind == "vgradient" else w, dtype=np.float32)
        ramp = ramp if rng.random() < 0.5 else ramp[::-1]
        img += (other - base) * (
            ramp[:, None, None] if kind == "vgradient" else ramp[None, :, None]
        )
    elif kind == "noise":
        coarse = rng.normal(0, 45, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3))
        img += cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "scene":
        for _ in range(int(rng.integers(3, 8))):
            x0, y0 = int(rng.integers(-40, w)), int(rng.integers(-40, h))
            x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 160))
            colour = np.clip(base + rng.normal(0, 60, 3), 0, 255)
            cv2.rectangle(img, (x0, y0), (x1, y1), colour.tolist(), -1)
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 5)))
    img += rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the face


@dataclass
class _Scene:
    """One photo being painted: linear RGB canvas plus everything needed to draw on it."""

    p: Identity
    look: Look
    cam: _Camera
    lights: _Lights
    canvas: np.ndarray  # linear RGB float32 (H, W, 3)

    def pixels(self, box: Box):
        """Pixel-centre coordinates (x, y) of the pixels in `box`, as (h, w) arrays."""
        ys = np.arange(box[0].start, box[0].stop, dtype=np.float32)
        xs = np.arange(box[1].start, box[1].stop, dtype=np.float32)
        shape = (len(ys), len(xs))
        return np.broadcast_to(xs, shape), np.broadcast_to(ys[:, None], shape)

    def ellipsoid_box(self, axes, centre, turn: bool = False, below: float = 1.0) -> Box | None:
        """The pixels an ellipsoid (turning with the head or not) can cover down to `below` * b."""
        corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * axes
        corners[:, 1] = np.minimum(corners[:, 1], below * axes[1])
        corners = (corners @ self.cam.rot.T if turn else corners) + np.asarray(centre)
        return _box(self.cam.to_image(corners[:, :2]), 2, self.canvas.shape)

    def poly(self, polygons, colour, blur: float = 0.0, weight=None) -> None:
        """Paint filled polygons (image coordinates); `weight(box)` scales the coverage."""
        hit = _poly_alpha(self.canvas.shape, polygons, blur)
        if hit is not None:
            box, alpha = hit
            _paint(self.canvas, box, alpha * weight(box) if weight else alpha, colour)

    def lines(self, polylines, colour, width: int, closed: bool = False) -> None:
        box = _box(np.concatenate(polylines), width + 2, self.canvas.shape)
        if box is None:
            return
        origin = np.array([box[1].start, box[0].start], np.float32)
        mask = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.uint8)
        pts = [_fix(p - origin) for p in polylines]
        cv2.polylines(mask, pts, closed, 255, width, cv2.LINE_AA, _SHIFT)
        _paint(self.canvas, box, mask * np.float32(1 / 255), colour)


def _paint_ellipsoid(s: _Scene, axes, centre, albedo, shade=None) -> None:
    """Draw a plain-coloured ellipsoid that does not turn with the head (neck, shoulders)."""
    box = s.ellipsoid_box(axes, centre)
    if box is None:
        return
    x, y = s.cam.from_image(*s.pixels(box), taper=False)
    w, _, n, z = _cast_ellipsoid(x, y, axes, np.eye(3, dtype=np.float32), centre)
    radiance = _shade(n, _to_linear(albedo), s.lights, points=(x, y, z))
    if shade is not None:
        radiance *= shade(y)[..., None]
    _paint(s.canvas, box, _coverage(w, min(axes[:2]) * s.cam.scale), radiance)


def _paint_body(s: _Scene) -> None:
    """Neck, shoulders and what is worn on them."""
    a, b, c = s.p.head
    _paint_ellipsoid(
        s,
        (0.5 * a, 40, 0.45 * a),
        (0, b, -0.2 * c),
        s.p.skin_rgb,
        shade=lambda y: 0.45 + 0.4 * np.clip((y - b + 4) / 20, 0, 1),
    )
    _paint_ellipsoid(s, (2.3 * a, 50, 0.8 * a), (0, b + 58, -0.4 * c), s.p.clothes_rgb)
    if s.look.necktie:
        tie = np.array(
            [[0, b + 9], [-5, b + 16], [-7, b + 60], [0, b + 68], [7, b + 60], [5, b + 16]],
            np.float32,
        )
        colour = _to_linear(np.asarray(s.p.clothes_rgb)[::-1] * 0.5 + 30) * s.lights.colour
        s.poly([s.cam.to_image(tie)], colour * (s.lights.ambient + 0.5 * s.lights.strength), 0.5)
    if s.look.necklace:
        arc = _ellipse_points((0, b + 4), (0.5 * a, 10), start=10, end=170, n=20)
        s.lines([s.cam.to_image(arc)], _to_linear((220, 190, 110)), 2)


def _paint_long_hair(s: _Scene, rng: np.random.Generator) -> None:
    a, b, c = s.p.head
    length = b + 28
    side = np.array(
        [
            [0.9 * a, -0.55 * b],
            [a + 7, -0.1 * b],
            [a + 11, 0.6 * b],
            [a + 13, length],
            [a - 8, length + 8],
            [0.45 * a, b + 4],
        ],
        np.float32,
    )
    outline2d = np.concatenate([side * (-1, 1), [[0, b + 10]], side[::-1], [[0.0, -b - 4]]])
    depth = np.full((len(outline2d), 1), -0.25 * c, np.float32)
    outline = s.cam.project(np.concatenate([outline2d, depth], 1), taper=False)
    hit = _poly_alpha(s.canvas.shape, [outline], 0.6)
    if hit is None:
        return
    box, alpha = hit
    centre = s.cam.project(np.array([[0, 0, -0.25 * c]], np.float32), taper=False)[0]
    nx = np.clip((s.pixels(box)[0] - centre[0]) / ((a + 14) * s.cam.scale), -0.97, 0.97)
    normals = (nx, np.float32(0), np.sqrt(1 - nx * nx))
    albedo = _to_linear(HAIR_RGB[s.p.hair]) * _streaks(rng, nx.shape, 15)[..., None] ** 2
    fx, fy = s.cam.from_image(*s.pixels(box), taper=False)
    points = (fx, fy, np.float32(-0.25 * c))
    _paint(s.canvas, box, alpha, _shade(normals, albedo, s.lights, 0.3, points=points) * 0.8)


def _ear(s: _Scene, side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Image outline of one ear, its lobe in the image, and its depth towards the viewer."""
    a, _, c = s.p.head
    centre = np.array([side * 0.97 * a, s.p.eye_y + 9, -0.08 * c], np.float32)
    e1 = np.array([side * 0.75, 0, -0.66], np.float32)  # the ear stands out and back
    t = np.radians(np.linspace(0, 360, 24, endpoint=False))
    ring = centre + np.outer(6 * np.cos(t) + 3, e1) + np.outer(11.5 * np.sin(t), [0, 1, 0])
    lobe = s.cam.project((centre + np.array([0, 10, 0], np.float32))[None])[0]
    return s.cam.project(ring), lobe, float((s.cam.rot @ centre)[2])


def _paint_ear(s: _Scene, side: int, ear: bool = True) -> None:
    """One ear (ear=False: only its earring, for ears under long hair)."""
    outline, lobe, _ = _ear(s, side)
    where = s.cam.rot @ np.array([side * s.p.head[0], s.p.eye_y + 9, 0], np.float32)
    if ear:
        normal = s.cam.rot @ np.array([side * 0.66, 0, 0.75], np.float32)
        skin = _to_linear(s.p.skin_rgb) * 0.9
        radiance = _shade(normal[:, None], skin, s.lights, points=where[:, None])[0]
        s.poly([outline], radiance, 0.4)
        centre = outline.mean(0)
        s.poly([centre + 0.5 * (outline - centre)], radiance * 0.55, 1.0)
    if s.look.earrings:
        s.poly(
            [_ellipse_points(lobe, (2.2 * s.cam.scale,) * 2, n=12)],
            _to_linear((235, 200, 90)) * 1.2,
        )


def _nose_shadows(s: _Scene, nose_img: np.ndarray, box: Box) -> list[np.ndarray | None]:
    """Per light, the soft cast shadow of the nose on the face within `box` (0..1)."""
    heights = np.array([1.0, s.p.nose_depth, 2.0, 2.0, s.p.nose_depth * 0.3], np.float32)
    shadows = []
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    origin = np.array([box[1].start, box[0].start], np.float32)
    roll = np.radians(s.cam.roll)
    turn = np.array([[np.cos(roll), np.sin(roll)], [-np.sin(roll), np.cos(roll)]], np.float32)
    for light in s.lights.directions:
        if s.look.light_kind == "flat" or light[2] < 0.05:
            shadows.append(None)
            continue
        reach = np.clip(-light[:2] / max(light[2], 0.4), -2.2, 2.2) @ turn
        moved = nose_img + np.outer(heights * s.cam.scale, reach)
        hull = cv2.convexHull(np.concatenate([nose_img, moved]) - origin)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [_fix(hull)], 255, cv2.LINE_AA, _SHIFT)
        shadows.append(0.85 * cv2.GaussianBlur(mask * np.float32(1 / 255), (0, 0), 1.2))
    return shadows


def _paint_head(s: _Scene, tex: _Texture, nose_img: np.ndarray) -> None:
    a, b, c = s.p.head
    box = s.ellipsoid_box((a, b, c), (0, 0, 0), turn=True)
    x, y = s.cam.from_image(*s.pixels(box))
    w, q, n, z = _cast_ellipsoid(x, y, (a, b, c), s.cam.rot)
    texel = _sample_texture(tex, q)
    shine = (1 - 0.75 * texel[..., 3]) * (0.6 + 0.8 * s.p.skin)
    shadows = _nose_shadows(s, nose_img, box)
    radiance = _shade(n, texel[..., :3], s.lights, shine, shadows, points=(x, y, z))
    _paint(s.canvas, box, _coverage(w, min(a, b) * s.cam.scale), radiance)


def _paint_hair_shell(s: _Scene, tex: _Texture) -> None:
    """Hair volume: a slightly larger ellipsoid behind the head, drawn where the texture has hair."""
    a, b, c = s.p.head
    grow = 3.0 if s.p.hair_style == "long" else 2.0
    axes = (a + grow, b + grow + 2, c + grow)
    centre = tuple(s.cam.rot @ np.array([0, -2.5, -1.0], np.float32))
    box = s.ellipsoid_box(axes, centre, turn=True, below=0.5)  # no hair lower down the shell
    x, y = s.cam.from_image(*s.pixels(box))
    w, q, n, z = _cast_ellipsoid(x, y, axes, s.cam.rot, centre)
    texel = _sample_texture(tex, q, a / axes[0], b / axes[1])
    alpha = _coverage(w, min(axes[:2]) * s.cam.scale) * texel[..., 3]
    radiance = _shade(n, texel[..., :3], s.lights, 0.25 * texel[..., 3], points=(x, y, z))
    _paint(s.canvas, box, alpha, radiance)


def _paint_nose(s: _Scene, body: np.ndarray, img: np.ndarray) -> None:
    """The nose as four shaded triangles (two flanks, two underside), back faces culled."""
    skin = _to_linear(s.p.skin_rgb) * np.array([1.0, 0.94, 0.93], np.float32)
    faces = [
        ((0, 1, 2), (-1, 0, 0.6)),
        ((0, 1, 3), (1, 0, 0.6)),
        ((1, 4, 2), (-0.4, 1, 0.4)),
        ((1, 4, 3), (0.4, 1, 0.4)),
    ]
    bridge, axis = img[0], img[1] - img[0]

    def fade(box):  # the bridge melts into the forehead
        x, y = s.pixels(box)
        along = ((x - bridge[0]) * axis[0] + (y - bridge[1]) * axis[1]) / max(axis @ axis, 1e-3)
        return np.clip(along / 0.5, 0, 1)

    for idx, ref in faces:
        tri = body[list(idx)]
        normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        normal *= np.sign(normal @ np.asarray(ref, np.float32)) / np.linalg.norm(normal)
        world = (s.cam.rot @ normal).astype(np.float32)
        if world[2] <= 0.03:
            continue
        # Shade with a normal halfway to the face's own: a rounded, not a sharp, nose.
        soft = s.cam.rot @ (normal + np.array([0, 0, 1.0], np.float32))
        soft = (soft / np.linalg.norm(soft)).astype(np.float32)
        centroid = s.cam.rot @ tri.mean(0)
        radiance = _shade(soft[:, None], skin, s.lights, 0.4, points=centroid[:, None])[0]
        if idx[1] == 4:
            radiance = radiance * 0.7  # nostrils and the shaded underside
        s.poly([img[list(idx)]], radiance, 0.5, weight=fade)


def _paint_glasses(s: _Scene, eyes: np.ndarray) -> None:
    t = np.radians(np.linspace(0, 360, 28, endpoint=False))
    rims = []
    for eye in eyes:
        ring = eye + np.stack([9.5 * np.cos(t), 7.5 * np.sin(t) + 0.5, np.full_like(t, 6)], 1)
        rims.append(s.cam.project(ring.astype(np.float32)))
    s.poly(rims, np.float32(0.8), weight=lambda box: np.float32(0.12))
    width = max(1, int(round(1.6 * s.cam.scale)))
    frame = [*rims, np.stack([rims[0][0], rims[1][14]])]
    for side, rim in ((-1, rims[0]), (1, rims[1])):
        outline, _, depth = _ear(s, side)
        if depth > -8:  # the far temple hides behind the head
            start = rim[14 if side < 0 else 0]
            end = outline[18]  # the top of the ear; stop short of it (hair may cover it)
            frame.append(np.stack([start, start + 0.8 * (end - start)]))
    s.lines(frame[:2], np.float32(0.01), width, closed=True)
    s.lines(frame[2:], np.float32(0.01), width)


def _camera(p: Identity, look: Look, size) -> _Camera:
    w, h = size
    unit = h / ALIGNED_SIZE[1]
    anchor = (
        EYE_ANCHOR[0] * w / ALIGNED_SIZE[0] + look.shift[0] * unit,
        EYE_ANCHOR[1] * unit + look.shift[1] * unit,
    )
    return _Camera(
        _rotation(look.yaw, look.pitch),
        p.eye_y,
        anchor,
        look.scale * unit,
        look.roll,
        p.head[1],
        p.taper,
    )


def draw_face(
    p: Identity, look: Look, rng: np.random.Generator, size: tuple[int, int] = ALIGNED_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one photo: (RGB uint8 (H, W, 3), landmarks (5, 2) float, background sRGB uint8)."""
    cam = _camera(p, look, size)
    background = draw_background(rng, look.background, look.background_level, size)
    s = _Scene(p, look, cam, _lights(look), _to_linear(background))
    points = face_points(p, look)
    tex = _face_texture(p, look)
    _paint_body(s)
    if p.hair_style == "long":
        _paint_long_hair(s, rng)
    depth = {side: _ear(s, side)[2] for side in (-1, 1)}
    short = p.hair_style != "long"
    for side in (-1, 1):
        if depth[side] <= 0 and short:
            _paint_ear(s, side)
    if p.hair_style != "bald":
        _paint_hair_shell(s, tex)
    nose_img = cam.project(points["nose"])
    _paint_head(s, tex, nose_img)
    for side in (-1, 1):
        if depth[side] > 0 or (not short and depth[side] > -0.3 * p.head[2]):
            _paint_ear(s, side, ear=short)  # long hair covers the ear but not the earring
    _paint_nose(s, points["nose"], nose_img)
    if look.glasses:
        _paint_glasses(s, points["landmarks"][:2])
    image = _to_srgb(s.canvas)
    if look.blurry:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(1.2, 1.8)))
    landmarks = cam.project(points["landmarks"])
    if landmarks[0, 0] > landmarks[1, 0]:  # "left" is always the eye with the smaller x
        landmarks = landmarks[[1, 0, 2, 3, 4]]
    return image, landmarks, background


def render_face(
    rng: np.random.Generator,
    yaw: float,
    light_azimuth: float,
    light_kind: str,
    identity: Identity | None = None,
    size: tuple[int, int] = ALIGNED_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """One face at a given yaw and light: (RGB uint8 (H, W, 3), landmarks (5, 2) in pixels).

    Landmark rows: left eye, right eye, nose tip, left and right mouth corner (image left/right).
    """
    if identity is None:
        identity = sample_identity(rng, int(rng.integers(1, 10**6)))
    look = sample_look(rng, identity, yaw, light_azimuth, light_kind)
    image, landmarks, _ = draw_face(identity, look, rng, size)
    return image, landmarks


# ----------------------------------------------------------------------------- attributes


def attributes(p: Identity, look: Look, rng: np.random.Generator) -> dict[str, int]:
    """The 40 CelebA attributes (1 / -1) of one photo, matching what was drawn."""
    drawn = {
        "5_o_Clock_Shadow": p.beard == "stubble",
        "Arched_Eyebrows": p.arched_brows,
        "Bald": p.hair_style == "bald",
        "Bangs": p.bangs,
        "Big_Lips": p.lip_size > 3.3,
        "Big_Nose": p.nose_width > 6.5,
        "Black_Hair": p.hair == "black" and p.hair_style != "bald",
        "Blond_Hair": p.hair == "blond" and p.hair_style != "bald",
        "Blurry": look.blurry,
        "Brown_Hair": p.hair == "brown" and p.hair_style != "bald",
        "Bushy_Eyebrows": p.brow_thick > 4.2,
        "Chubby": p.chubby,
        "Eyeglasses": look.glasses,
        "Goatee": p.beard == "goatee",
        "Gray_Hair": p.hair == "gray",
        "Heavy_Makeup": look.makeup,
        "Male": p.male,
        "Mouth_Slightly_Open": look.mouth_open,
        "Mustache": p.beard in ("mustache", "full"),
        "Narrow_Eyes": p.narrow_eyes,
        "No_Beard": p.beard in ("none", "stubble"),
        "Pale_Skin": p.skin > 0.93,
        "Receding_Hairline": p.hair_style == "receding",
        "Rosy_Cheeks": look.rosy,
        "Sideburns": p.beard == "full",
        "Smiling": look.smiling,
        "Wearing_Earrings": look.earrings,
        "Wearing_Lipstick": look.lipstick,
        "Wearing_Necklace": look.necklace,
        "Wearing_Necktie": look.necktie,
        "Young": p.young,
    }
    odds = dict(p.random_p)
    drawn |= {name: rng.random() < odds[name] for name in _RANDOM_ATTRIBUTES}
    return {name: 1 if drawn[name] else -1 for name in ATTRIBUTES}


# ----------------------------------------------------------------------------- the dataset


def _identities(n: int, count: int, seed: int) -> tuple[list[Identity], np.ndarray, dict]:
    """The people, which person each image shows, and each person's partition (0/1/2)."""
    rng = np.random.default_rng([seed, 1])
    ids = rng.choice(np.arange(1, max(10177, 2 * count) + 1), size=count, replace=False)
    people = [sample_identity(np.random.default_rng([seed, 2, int(i)]), int(i)) for i in ids]
    extra = rng.multinomial(n - count, rng.dirichlet(np.full(count, 2.0)))
    owner = rng.permutation(np.repeat(np.arange(count), 1 + extra))
    order = rng.permutation(count)
    cut = np.round(np.array([0.8, 0.9]) * count).astype(int)
    partition = {
        int(ids[k]): int(np.searchsorted(cut, rank, side="right")) for rank, k in enumerate(order)
    }
    return people, owner, partition


def _render_one(job: tuple[int, int, Identity, str]) -> dict:
    """Render and write image `index` (0-based); returns its annotation rows."""
    index, seed, p, image_dir = job
    rng = np.random.default_rng([seed, 3, index])
    look = sample_look(rng, p)
    image, landmarks, background = draw_face(p, look, rng)
    name = f"{index + 1:06d}.jpg"
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
    if not ok:
        raise RuntimeError(f"{name}: OpenCV could not encode the rendered face as JPEG")
    Path(image_dir, name).write_bytes(data.tobytes())
    luminance = background.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    truth = {
        "image_id": name,
        "identity": p.identity,
        "yaw": round(look.yaw, 2),
        "orientation": orientation_class(look.yaw),
        "light_azimuth": round(look.light_azimuth if look.light_kind == "directional" else 0.0, 2),
        "light_kind": look.light_kind,
        "light": light_class(look.light_kind, look.light_azimuth),
        "male": int(p.male),
        "skin": p.skin,
        "background": round(float(luminance.mean()), 1),
        "pitch": round(look.pitch, 2),
        "roll": round(look.roll, 2),
        "scale": round(look.scale, 3),
        "light_elevation": round(look.light_elevation, 2),
        "ambient": round(look.ambient, 3),
        "jpeg_quality": look.jpeg_quality,
    }
    return {
        "truth": truth,
        "landmarks": [int(v) for v in np.rint(landmarks).astype(int).ravel()],
        "attributes": attributes(p, look, rng),
    }


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file, not a folder; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not _is_synthetic(out):
        raise FileExistsError(
            f"{out}: folder is not empty and is not a facelab synthetic dataset (no {MARKER}); "
            "refusing to write into it. Choose an empty or new folder."
        )


def _is_synthetic(out: Path) -> bool:
    """True for a folder `render_celeba` wrote (its marker file names this generator)."""
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("generator") == _GENERATOR


def _clear_previous(out: Path) -> None:
    """Remove the images of an earlier render in a folder we own (nothing else)."""
    folder = out / IMAGE_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            if f.suffix == ".jpg" and f.stem.isdigit() and len(f.stem) == 6:
                f.unlink()


def _write_annotations(out: Path, rows: list[dict], partition: dict) -> None:
    names = [r["truth"]["image_id"] for r in rows]
    ids = [r["truth"]["identity"] for r in rows]
    count = f"{len(rows)}\n"
    lm = [
        f"{n}" + "".join(f"{v:>5d}" for v in r["landmarks"])
        for n, r in zip(names, rows, strict=True)
    ]
    atomic_write_text(
        count + " ".join(LANDMARK_COLUMNS) + "\n" + "\n".join(lm) + "\n",
        out / "list_landmarks_align_celeba.txt",
    )
    attr = [
        f"{n}" + "".join(f"{r['attributes'][a]:>3d}" for a in ATTRIBUTES)
        for n, r in zip(names, rows, strict=True)
    ]
    atomic_write_text(
        count + " ".join(ATTRIBUTES) + " \n" + "\n".join(attr) + "\n", out / "list_attr_celeba.txt"
    )
    atomic_write_text(
        "".join(f"{n} {i}\n" for n, i in zip(names, ids, strict=True)), out / "identity_CelebA.txt"
    )
    atomic_write_text(
        "".join(f"{n} {partition[i]}\n" for n, i in zip(names, ids, strict=True)),
        out / "list_eval_partition.txt",
    )
    atomic_write_csv(pd.DataFrame([r["truth"] for r in rows]), out / "truth.csv")


def render_celeba(
    out_dir: str | Path,
    n: int = 3000,
    seed: int = 0,
    identities: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Render a miniature CelebA (images, the four annotation files, truth.csv) into `out_dir`.

    Same (n, seed, identities) gives byte-identical files, whatever `workers` (default: up to 2
    processes). Refuses a non-empty folder that holds no earlier render's marker file.
    """
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    count = max(1, round(n / 10)) if identities is None else int(identities)
    if not 1 <= count <= n:
        raise ValueError(f"identities must be between 1 and n={n}, got {identities}")
    out = Path(out_dir)
    _check_out_dir(out)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    marker = {"generator": _GENERATOR, "n": n, "seed": seed, "identities": count}
    atomic_write_text(json.dumps(marker, indent=1) + "\n", out / MARKER)
    _clear_previous(out)
    people, owner, partition = _identities(n, count, seed)
    # Render a person's photos together (their texture is cached); results are put back in order.
    order = sorted(range(n), key=lambda i: (owner[i], i))
    jobs = [(i, seed, people[owner[i]], str(out / IMAGE_DIR)) for i in order]
    rows = render_in_order(_render_one, jobs, order, workers, "rendering faces", progress)
    _write_annotations(out, rows, partition)
    return out


def render_in_order(
    render: Callable[[tuple], dict],
    jobs: list[tuple],
    order: list[int],
    workers: int | None = None,
    desc: str = "rendering faces",
    progress: bool = True,
) -> list[dict]:
    """``render(job)`` for every job, in up to ``workers`` processes (default: up to 2), with a
    progress bar; job ``k`` renders image ``order[k]`` and the results come back by image."""
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    rows: list[dict | None] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress) as bar:
        if workers > 1 and len(jobs) >= 100:
            with _pool(workers) as pool:
                for i, row in zip(order, pool.imap(render, jobs, chunksize=8), strict=True):
                    rows[i] = row
                    bar.update()
        else:
            for i, job in zip(order, jobs, strict=True):
                rows[i] = render(job)
                bar.update()
    return rows


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """Worker processes started with "spawn" (safe beside TensorFlow's threads).

    Spawned children normally re-run the caller's script; one without an `if __name__ ==
    "__main__":` guard would then call render_celeba again in every child and hang. The workers
    need nothing from that script, so it is hidden from them while they start.
    """
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers, cv2.setNumThreads, (1,))
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            del main.__spec__
    with pool:
        yield pool
