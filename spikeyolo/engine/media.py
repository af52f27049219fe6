"""Pictures and video for prediction: what a ``source=`` names, frame by frame, and the annotated outputs.

``source`` is an image file, a folder (its images, sorted), a glob pattern (``"frames/*.png"``) or a video
file (read with OpenCV). :func:`iter_media` yields one :class:`Frame` per picture or video frame; a file that
cannot be read, or a video frame that cannot be decoded, becomes a :class:`Frame` with ``error`` set (one line
naming it) and the rest goes on (:func:`spikeyolo.plots.draw_detections` draws the boxes);
:class:`VideoOut` writes annotated frames as a video; :func:`yolo_label_lines` gives a frame's detections as
YOLO txt lines.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Frame", "describe_source", "iter_media", "VideoOut",
           "yolo_label_lines"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


@dataclass
class Frame:
    """One picture of a source.

    Attributes:
        name: the file name (an image) or ``<video stem>_<frame index, 6 digits>`` (a video frame).
        image: [H, W, 3] uint8 BGR, or None when it could not be read.
        path: the image file or the video file.
        index: the frame index in a video (None for an image).
        error: why ``image`` is None (one line), else None.
    """

    name: str
    image: np.ndarray | None
    path: str
    index: int | None = None
    error: str | None = None


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _files(source: str) -> list[Path]:
    """The files a source names (one file, a folder's images, or a glob's matches), sorted."""
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if path.is_file():
        return [path]
    if glob.has_magic(source):
        return sorted(Path(p) for p in glob.glob(source, recursive=True)
                      if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    return []


def describe_source(source: str) -> tuple[list[Path], str]:
    """(the files, a short description) of a source; no files means the source names nothing usable."""
    files = _files(source)
    videos = sum(_is_video(f) for f in files)
    return files, f"{len(files) - videos} image(s), {videos} video(s)"


def iter_media(files: Sequence[Path], max_bad_frames: int = 30) -> Iterator[Frame]:
    """Every picture of ``files`` (from :func:`describe_source`), in order; bad ones as error frames.

    A video is read frame by frame; a frame that does not decode is reported and skipped. After
    ``max_bad_frames`` failures in a row (the end of a truncated file) the video is left.
    """
    for path in files:
        if _is_video(path):
            yield from _video_frames(path, max_bad_frames)
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        error = None if image is not None else f"{path}: not a readable image (OpenCV cannot decode it)"
        yield Frame(name=path.name, image=image, path=str(path), error=error)


def _video_frames(path: Path, max_bad_frames: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        yield Frame(name=path.name, image=None, path=str(path), error=f"{path}: not a readable video")
        return
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    index, bad_in_a_row = 0, 0
    try:
        while total <= 0 or index < total:
            ok, image = capture.read()
            name = f"{path.stem}_{index:06d}"
            if ok and image is not None:
                bad_in_a_row = 0
                yield Frame(name=name, image=image, path=str(path), index=index)
            else:
                if total <= 0:   # no frame count: a failed read is the end
                    return
                bad_in_a_row += 1
                yield Frame(name=name, image=None, path=str(path), index=index,
                            error=f"{path}: frame {index} of {total} cannot be decoded (skipped)")
                if bad_in_a_row >= max_bad_frames:
                    return
                capture.set(cv2.CAP_PROP_POS_FRAMES, index + 1)
            index += 1
    finally:
        capture.release()


class VideoOut:
    """Annotated frames of one source video written as ``<out>/<video stem>.mp4`` (mp4v), in frame order.

    The file is written under a temp name and renamed when closed, so a crash never leaves a torn video
    under the final name.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        self.size = size
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> Path:
        self.writer.release()
        self.tmp.replace(self.path)
        return self.path


def yolo_label_lines(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, shape: tuple[int, int],
                     with_scores: bool = True) -> list[str]:
    """YOLO txt lines ``class cx cy w h [score]`` (normalised to the image) of one frame's detections."""
    height, width = shape
    lines = []
    for (x1, y1, x2, y2), score, cls in zip(boxes, scores, classes):
        values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        line = f"{int(cls)} " + " ".join(f"{v:.6f}" for v in values)
        lines.append(line + (f" {float(score):.6f}" if with_scores else ""))
    return lines
