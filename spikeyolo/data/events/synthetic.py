"""Synthetic Prophesee-format recordings (Gen1 and 1Mpx): textured objects crossing a textured background.

Each recording is a static textured background with a few objects (Gen1 scenes: class 0 "car", a wide rectangle;
class 1 "pedestrian", a tall ellipse; :data:`GEN4_SCENE` has the 1Mpx classes, below), each carrying its own texture
and moving at a constant velocity. Frames are
rendered every ``frame_period_us``; like an ideal DVS pixel, each pixel keeps a reference log-intensity and emits
one event each time its log-intensity moves ``contrast_threshold`` away from it (ON when brighter, OFF when darker),
the event time interpolated linearly between the two frames. Uniform background-activity noise is added. Boxes
(the visible part of each object, clipped to the sensor) are labelled every ``label_period_us`` from
``label_start_us`` on, with a track id per object. The output is deterministic for a given seed.

Files follow the release layout: ``OUT/{train,val,test}/<name>_td.dat`` and ``<name>_bbox.npy``; Gen1 scenes
(the default :class:`SceneConfig`) write TD events at Gen1's size and the Gen1 box dtype (``ts``, ``confidence``),
:data:`GEN4_SCENE` CD events (type 0x0C) at 1280x720 and the newer box dtype (``t``, ``class_confidence``) with
labels at 60 Hz, as the 1 Megapixel dataset::

    python -m spikeyolo.data.events.synthetic OUT_DIR --recordings 2 --duration-s 2 [--camera gen4]
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeyolo.data.events.boxes import BOX_DTYPE, write_boxes
from spikeyolo.data.events.cameras import GEN1, GEN4
from spikeyolo.data.events.dat import EVENT_DTYPE, EVENT_TYPE_CD, EVENT_TYPE_TD, write_dat

__all__ = ["ObjectClass", "GEN1_CLASSES", "GEN4_CLASSES", "SceneConfig", "GEN1_SCENE", "GEN4_SCENE", "SCENES",
           "simulate_recording", "write_recording", "generate_dataset"]


@dataclass(frozen=True)
class ObjectClass:
    """One kind of synthetic object: the class id it is labelled with, its shape, and the uniform ranges its size
    (pixels) and speed (pixels per second) are drawn from."""

    class_id: int
    shape: str                       # "rectangle" or "ellipse"
    width: tuple[float, float]
    height: tuple[float, float]
    speed: tuple[float, float]


#: Gen1's two classes: 0 car (a wide rectangle), 1 pedestrian (a tall ellipse).
GEN1_CLASSES = (ObjectClass(0, "rectangle", (36, 80), (22, 44), (40, 120)),
                ObjectClass(1, "ellipse", (12, 24), (28, 60), (15, 45)))
#: 1Mpx release ids (0 pedestrian, 1 two-wheeler, 2 car, 3 truck, ...; toolbox issue #23): the three classes the
#: evaluation keeps, at about four times Gen1's size in pixels, plus trucks (id 3), which the gen4 pipeline drops.
GEN4_CLASSES = (ObjectClass(0, "ellipse", (40, 90), (110, 230), (60, 180)),
                ObjectClass(1, "ellipse", (90, 170), (70, 130), (150, 350)),
                ObjectClass(2, "rectangle", (150, 320), (90, 180), (160, 480)),
                ObjectClass(3, "rectangle", (300, 560), (200, 300), (100, 300)))


@dataclass(frozen=True)
class SceneConfig:
    """What a synthetic recording looks like (defaults: the Gen1 sensor, classes, label rate and file dtypes).

    Args:
        width, height: sensor size in pixels.
        frame_period_us: rendering period; events are interpolated between frames.
        contrast_threshold: log-intensity change per event.
        noise_rate_hz: background-activity events per pixel per second.
        min_objects: objects per recording, at least.
        objects_per_second: extra objects per second of recording (Poisson mean).
        label_start_us, label_period_us: box labels at label_start_us, +label_period_us, ... before the end.
        min_box_size: a clipped box narrower or lower than this (pixels) is not labelled.
        classes: the kinds of objects, drawn with equal probability.
        texture_scale: multiplies the textures' periods (1 for Gen1; 4 at 1280x720).
        event_type: the ``.dat`` event type byte: 0x00 (TD, Gen1) or 0x0C (CD, 1Mpx).
        legacy_boxes: write the Gen1 box dtype (``ts``, ``confidence``); else the newer one (``t``,
            ``class_confidence``).
    """

    width: int = GEN1.width
    height: int = GEN1.height
    frame_period_us: int = 1000
    contrast_threshold: float = 0.2
    noise_rate_hz: float = 0.05
    min_objects: int = 2
    objects_per_second: float = 0.3
    label_start_us: int = 500_000
    label_period_us: int = 50_000
    min_box_size: float = 4.0
    classes: tuple[ObjectClass, ...] = GEN1_CLASSES
    texture_scale: float = 1.0
    event_type: int = EVENT_TYPE_TD
    legacy_boxes: bool = True


#: Gen1: its sensor size, TD events, labels every 50 ms from 0.5 s, the Gen1 box dtype.
GEN1_SCENE = SceneConfig()
#: 1 Megapixel: 1280x720, CD events, labels at 60 Hz (16667 µs) from 0.5 s, the newer box dtype; frames every
#: 2 ms (events are interpolated between them) to keep the simulation of 921,600 pixels affordable.
GEN4_SCENE = SceneConfig(width=GEN4.width, height=GEN4.height, frame_period_us=2000, label_period_us=16_667,
                         min_box_size=16.0, classes=GEN4_CLASSES, texture_scale=4.0, event_type=EVENT_TYPE_CD,
                         legacy_boxes=False)
SCENES = {"gen1": GEN1_SCENE, "gen4": GEN4_SCENE}


@dataclass(frozen=True)
class _MovingObject:
    class_id: int
    shape: str
    track_id: int
    width: float
    height: float
    left0: float            # top-left corner at t = 0 (pixels)
    top0: float
    velocity_x: float       # pixels per µs
    velocity_y: float
    brightness: float       # mean intensity in (0, 1)
    texture: tuple[float, float, float, float]   # (cycles/pixel along u, along v, phase, relative amplitude)

    def corner(self, t_us: float) -> tuple[float, float]:
        return self.left0 + self.velocity_x * t_us, self.top0 + self.velocity_y * t_us


def _make_objects(rng: np.random.Generator, duration_us: int, scene: SceneConfig) -> list[_MovingObject]:
    count = scene.min_objects + int(rng.poisson(scene.objects_per_second * duration_us * 1e-6))
    objects = []
    for track_id in range(count):
        kind = scene.classes[int(rng.integers(len(scene.classes)))]
        width, height, speed = rng.uniform(*kind.width), rng.uniform(*kind.height), rng.uniform(*kind.speed)
        width, height = min(width, scene.width / 2), min(height, scene.height / 2)
        velocity_x = speed * rng.choice([-1.0, 1.0]) * 1e-6
        velocity_y = rng.uniform(-0.15, 0.15) * speed * 1e-6
        # fully in view, centre at a random place, at a random time of the recording
        t_seen = rng.uniform(0.1, 0.9) * duration_us
        left_seen = rng.uniform(0, scene.width - width)
        top_seen = rng.uniform(0, scene.height - height)
        brightness = rng.uniform(0.12, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.95)
        period_u, period_v = rng.uniform(4, 12) * scene.texture_scale, rng.uniform(4, 12) * scene.texture_scale
        texture = (1 / period_u, 1 / period_v, rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3))
        objects.append(_MovingObject(kind.class_id, kind.shape, track_id, width, height,
                                     left_seen - velocity_x * t_seen, top_seen - velocity_y * t_seen, velocity_x,
                                     velocity_y, brightness, texture))
    return objects


def _background(rng: np.random.Generator, scene: SceneConfig) -> np.ndarray:
    """Static texture in [0.3, 0.7]: a sum of random gratings. [H, W] float64."""
    rows, cols = np.mgrid[0:scene.height, 0:scene.width] + 0.5
    image = np.zeros((scene.height, scene.width))
    for _ in range(4):
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40) * scene.texture_scale
        phase = rng.uniform(0, 2 * np.pi)
        image += np.sin(2 * np.pi * (cols * np.cos(angle) + rows * np.sin(angle)) / period + phase)
    return 0.5 + 0.05 * image


def _region(obj: _MovingObject, t_us: float, scene: SceneConfig) -> tuple[int, int, int, int] | None:
    """Pixel rows [r0, r1) and columns [c0, c1) the object touches at t_us (1-pixel margin), or None if out of view."""
    left, top = obj.corner(t_us)
    r0, r1 = max(0, math.floor(top) - 1), min(scene.height, math.ceil(top + obj.height) + 1)
    c0, c1 = max(0, math.floor(left) - 1), min(scene.width, math.ceil(left + obj.width) + 1)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _render(background: np.ndarray, objects: Sequence[_MovingObject], t_us: float,
            box: tuple[int, int, int, int], scene: SceneConfig) -> np.ndarray:
    """Intensity inside the pixel box [r0:r1, c0:c1] at t_us; later objects are drawn over earlier ones."""
    r0, r1, c0, c1 = box
    image = background[r0:r1, c0:c1].copy()
    for obj in objects:
        region = _region(obj, t_us, scene)
        if region is None:
            continue
        o_r0, o_r1, o_c0, o_c1 = max(r0, region[0]), min(r1, region[1]), max(c0, region[2]), min(c1, region[3])
        if o_r0 >= o_r1 or o_c0 >= o_c1:
            continue
        left, top = obj.corner(t_us)
        v = (np.arange(o_r0, o_r1) + 0.5 - top)[:, None]        # object-local row coordinate, [h, 1]
        u = (np.arange(o_c0, o_c1) + 0.5 - left)[None, :]       # object-local column coordinate, [1, w]
        if obj.shape == "rectangle":     # with a 1-pixel anti-aliased edge
            cover = (np.clip(np.minimum(u, obj.width - u) + 0.5, 0, 1)
                     * np.clip(np.minimum(v, obj.height - v) + 0.5, 0, 1))
        else:                       # ellipse; distance to the rim approximated along the short axis
            radius = np.hypot((u - obj.width / 2) / (obj.width / 2), (v - obj.height / 2) / (obj.height / 2))
            cover = np.clip((1 - radius) * min(obj.width, obj.height) / 2 + 0.5, 0, 1)
        freq_u, freq_v, phase, amplitude = obj.texture
        value = obj.brightness * (1 + amplitude * np.sin(2 * np.pi * (freq_u * u + freq_v * v) + phase))
        patch = image[o_r0 - r0:o_r1 - r0, o_c0 - c0:o_c1 - c0]
        patch += cover * (value - patch)
    return image


def _crossings(previous: np.ndarray, current: np.ndarray, reference: np.ndarray, threshold: float,
               t_previous: int, period_us: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold crossings between two log frames (flattened [P] arrays); updates ``reference`` in place.

    Returns (flat pixel index, polarity 0/1, time µs in (t_previous, t_previous + period_us]) per event.
    """
    difference = current - reference
    count = np.floor(np.abs(difference) / threshold).astype(np.int64)
    pixels = np.flatnonzero(count)
    if pixels.size == 0:
        return pixels, pixels, pixels
    counts, sign = count[pixels], np.sign(difference[pixels])
    pixel = np.repeat(pixels, counts)                                   # one entry per event
    step = np.arange(pixel.size) - np.repeat(np.cumsum(counts) - counts, counts) + 1   # 1..count per pixel
    level = reference[pixel] + np.repeat(sign, counts) * step * threshold
    change = current[pixel] - previous[pixel]           # not 0: |previous - reference| < threshold <= |change|
    fraction = np.divide(level - previous[pixel], change, out=np.ones_like(change), where=change != 0)
    time = t_previous + np.clip(np.ceil(fraction * period_us), 1, period_us).astype(np.int64)
    reference[pixels] += sign * counts * threshold
    return pixel, (np.repeat(sign, counts) > 0).astype(np.int64), time


def simulate_recording(duration_s: float, seed: int | Sequence[int],
                       scene: SceneConfig = SceneConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one recording.

    Returns:
        events: [N] :data:`~spikeyolo.data.events.dat.EVENT_DTYPE`, sorted by t, t in (0, duration].
        boxes: [M] :data:`~spikeyolo.data.events.boxes.BOX_DTYPE` (x, y top-left, clipped to the sensor),
            sorted by t then track id, class_confidence 1.
    """
    rng = np.random.default_rng(seed)
    duration_us = int(round(duration_s * 1e6))
    period = scene.frame_period_us
    objects = _make_objects(rng, duration_us, scene)
    background = _background(rng, scene)
    log_now = np.log(background)
    full = (0, scene.height, 0, scene.width)
    log_now[...] = np.log(_render(background, objects, 0, full, scene))
    reference = log_now.copy()
    noise_mean = scene.noise_rate_hz * scene.width * scene.height * period * 1e-6
    chunks = []
    for t_now in range(period, duration_us + 1, period):
        regions = [r for obj in objects for r in (_region(obj, t_now - period, scene), _region(obj, t_now, scene))
                   if r is not None]
        parts = []
        if regions:
            r0, r1 = min(r[0] for r in regions), max(r[1] for r in regions)
            c0, c1 = min(r[2] for r in regions), max(r[3] for r in regions)
            current = np.log(_render(background, objects, t_now, (r0, r1, c0, c1), scene))
            reference_box = reference[r0:r1, c0:c1].copy()
            local, polarity, time = _crossings(log_now[r0:r1, c0:c1].ravel(), current.ravel(), reference_box.ravel(),
                                               scene.contrast_threshold, t_now - period, period)
            reference[r0:r1, c0:c1] = reference_box
            log_now[r0:r1, c0:c1] = current
            parts.append((time, c0 + local % (c1 - c0), r0 + local // (c1 - c0), polarity))
        num_noise = int(rng.poisson(noise_mean))
        if num_noise:
            parts.append((t_now - period + rng.integers(1, period + 1, num_noise),
                          rng.integers(0, scene.width, num_noise), rng.integers(0, scene.height, num_noise),
                          rng.integers(0, 2, num_noise)))
        if parts:   # the crossings and the noise of this frame period, in time order
            time, x, y, polarity = (np.concatenate(field) for field in zip(*parts, strict=True))
            order = np.argsort(time, kind="stable")
            chunk = np.empty(len(time), EVENT_DTYPE)
            chunk["t"], chunk["x"], chunk["y"], chunk["p"] = time[order], x[order], y[order], polarity[order]
            chunks.append(chunk)
    events = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    return events, _label(objects, duration_us, scene)


def _label(objects: Sequence[_MovingObject], duration_us: int, scene: SceneConfig) -> np.ndarray:
    rows = []
    for t_label in range(scene.label_start_us, duration_us, scene.label_period_us):
        for obj in objects:
            left, top = obj.corner(t_label)
            x0, x1 = max(0.0, left), min(float(scene.width), left + obj.width)
            y0, y1 = max(0.0, top), min(float(scene.height), top + obj.height)
            if x1 - x0 >= scene.min_box_size and y1 - y0 >= scene.min_box_size:
                rows.append((t_label, x0, y0, x1 - x0, y1 - y0, obj.class_id, 1.0, obj.track_id))
    return np.array(rows, dtype=BOX_DTYPE)


def write_recording(out_dir: str | Path, name: str, duration_s: float, seed: int | Sequence[int],
                    scene: SceneConfig = SceneConfig()) -> tuple[Path, Path]:
    """Simulate a recording and write ``out_dir/<name>_td.dat`` and ``out_dir/<name>_bbox.npy`` (the scene's event
    type and box dtype)."""
    events, boxes = simulate_recording(duration_s, seed, scene)
    out_dir = Path(out_dir)
    dat_path = write_dat(out_dir / f"{name}_td.dat", events, scene.width, scene.height, event_type=scene.event_type)
    box_path = write_boxes(out_dir / f"{name}_bbox.npy", boxes, legacy=scene.legacy_boxes)
    return dat_path, box_path


def generate_dataset(out_dir: str | Path, recordings_per_split: int, duration_s: float, seed: int = 0,
                     splits: Sequence[str] = ("train", "val", "test"),
                     scene: SceneConfig = SceneConfig()) -> list[tuple[Path, Path]]:
    """Write ``recordings_per_split`` recordings into each ``out_dir/<split>/``.

    Recording i of split s is simulated with the seed sequence (seed, crc32(s), i), so a file does not depend on
    which other splits or how many recordings are asked for.
    """
    written = []
    for split in splits:
        for index in range(recordings_per_split):
            written.append(write_recording(Path(out_dir) / split, f"synthetic_{split}_{index:04d}", duration_s,
                                           (seed, zlib.crc32(split.encode()), index), scene))
    return written
