"""RVT's preprocessed Gen1 / 1Mpx folders read as they are (``data.layout: rvt``), so that data prepared for RVT
trains and is scored here without redoing it.

RVT (Gehrig & Scaramuzza, CVPR 2023; uzh-rpg/RVT ``scripts/genx/preprocess_dataset.py``) writes, per recording
(a "sequence" folder of a split):

    <sequence>/event_representations_v2/stacked_histogram_dt=<ms>_nbins=<bins>/
        event_representations.h5             ``data`` [N, 2 * bins, H, W] uint8 (``..._ds2_nearest.h5``: H/2, W/2)
        objframe_idx_2_repr_idx.npy          [F] the representation ending at each label frame
        timestamps_us.npy                    [N] each representation's end time
    <sequence>/labels_v2/
        labels.npz                           ``labels`` (the release's box dtype, already filtered by RVT) and
                                             ``objframe_idx_2_label_idx`` [F] (each frame's first row)
        timestamps_us.npy                    [F] the label frames' times

A sample is a label frame, as RVT's ``SequenceForRandomAccess`` (data/genx_utils/sequence_rnd.py) makes it with
``sequence_length`` = T: the T representations ending at the frame's one, oldest first; frames too early to have
T representations before them are not samples. Representation i is the stacked histogram of
:func:`~spikeyolo.data.events.representations.stacked_histogram` over ``[timestamps_us[i] - dt, timestamps_us[i]]``,
so the run's ``data.representation: stacked_histogram`` with ``window_us = T * dt`` and ``stack_bins = bins`` is
the same input for recordings streamed by ``spikeyolo-predict``. The labels are RVT's (in sensor pixels); RVT
stores no event counts, so ``num_events`` is unknown (-1) and no window is dropped as empty.

Every file is read as data with bounds: ``.npy`` arrays whose declared size exceeds their bytes, object arrays and
compressed ``.npz`` members are refused; the HDF5 dataset must be [N, C, H, W] uint8 of the expected size, with
filters this installation has and chunks under 256 MB.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeyolo.data.events import as_boxes
from spikeyolo.data.events.cameras import GEN1, Camera
from spikeyolo.data.events.decoders import check_filters, h5py_with_filters
from spikeyolo.data.sources.prophesee.dataset import EventSample, PropheseeDataset
from spikeyolo.data.sources.prophesee.encoding import Representation
from spikeyolo.errors import DatasetError
from spikeyolo.io import read_npy

__all__ = ["RvtSequence", "RvtDataset", "rvt_folder_name", "find_rvt_sequences", "open_rvt_sequence"]

_REPR_ROOT = "event_representations_v2"


def rvt_folder_name(rep: Representation) -> str:
    """The representation folder RVT names for ``rep`` (``stacked_histogram_dt=50_nbins=10`` for T x 50 ms)."""
    return f"stacked_histogram_dt={rep.slice_us // 1000}_nbins={int(rep.stack_bins)}"


def _check_representation(rep: Representation, where: Path) -> None:
    if rep.kind != "stacked_histogram" or rep.slice_us % 1000 or int(rep.window_us) % int(rep.time_steps) \
            or int(rep.downsample) not in (1, 2):
        raise DatasetError(f"{where}: data.layout=rvt holds RVT's stacked histograms: set "
                           "data.representation=stacked_histogram, data.window_us = T x the spacing of RVT's "
                           "frames (1Mpx: T x 50000; Gen1: T x 125000 with data.stack_slice_us=50000) and "
                           f"data.downsample 1 or 2 (got {rep.kind}, window_us={rep.window_us}, T={rep.time_steps}, "
                           f"downsample={rep.downsample})")


def _npy(handle, available: int, source: str) -> np.ndarray:
    """:func:`spikeyolo.io.read_npy` with its complaint as one DatasetError line naming ``source``."""
    try:
        return read_npy(handle, available)
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{source}: cannot read as a .npy array: {' '.join(str(exc).split())[:200]}") from None


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (an RVT sequence folder has it, see docs/events.md)")
    with open(path, "rb") as handle:
        return _npy(handle, path.stat().st_size, str(path))


def _load_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (an RVT sequence folder has it, see docs/events.md)")
    try:
        with zipfile.ZipFile(path) as archive:
            out = {}
            for name in names:
                try:
                    info = archive.getinfo(f"{name}.npy")
                except KeyError:
                    raise DatasetError(f"{path}: has no array {name!r}") from None
                if info.compress_type != zipfile.ZIP_STORED:   # np.savez stores; a compressed member could be a bomb
                    raise DatasetError(f"{path}: array {name!r} is compressed (RVT writes it with np.savez, stored)")
                with archive.open(info) as member:
                    out[name] = _npy(member, info.file_size, f"{path}:{name}")
            return out
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        raise DatasetError(f"{path}: cannot read as a .npz archive: {' '.join(str(exc).split())[:200]}") from None


def _index(array: np.ndarray, length: int | None, source: str) -> np.ndarray:
    if array.ndim != 1 or array.dtype.kind not in "iu" or (length is not None and len(array) != length):
        raise DatasetError(f"{source}: expected a 1-D integer array{'' if length is None else f' of {length}'}, "
                           f"got {array.dtype} {array.shape}")
    return array.astype(np.int64)


@dataclass(frozen=True)
class RvtSequence:
    """One RVT sequence folder, read and checked.

    Attributes:
        name: the folder's name (the recording).
        h5_path: the representations file.
        frame_times: [F] µs of the label frames.
        frame_repr: [F] the representation index ending at each frame.
        frame_labels: F arrays of boxes (:data:`~spikeyolo.data.events.BOX_DTYPE`, sensor pixels).
        repr_times: [N] µs at which each representation ends.
    """

    name: str
    h5_path: Path
    frame_times: np.ndarray
    frame_repr: np.ndarray
    frame_labels: tuple[np.ndarray, ...]
    repr_times: np.ndarray

    def frames(self, repr_index: int, time_steps: int) -> np.ndarray:
        """[T, C, H, W] uint8: the T representations ending at ``repr_index``, oldest first."""
        h5py = h5py_with_filters("reading RVT's preprocessed .h5 files")   # RVT compresses with Blosc
        start = int(repr_index) - int(time_steps) + 1
        with h5py.File(self.h5_path, "r") as handle:
            return np.asarray(handle["data"][start:int(repr_index) + 1], np.uint8)


def open_rvt_sequence(folder: str | os.PathLike, rep: Representation, camera: Camera) -> RvtSequence:
    """Read one RVT sequence folder for ``rep`` (see the module doc).

    Raises:
        DatasetError: a missing file or representation folder, arrays that disagree, a dataset of another shape
            or dtype than ``rep`` and the camera give, an HDF5 filter that is not installed (one line each).
    """
    folder = Path(folder)
    _check_representation(rep, folder)
    repr_dir = folder / _REPR_ROOT / rvt_folder_name(rep)
    if not repr_dir.is_dir():
        found = sorted(p.name for p in (folder / _REPR_ROOT).iterdir()) if (folder / _REPR_ROOT).is_dir() else []
        raise DatasetError(f"{repr_dir}: missing (this sequence has {found or 'no representations'}; the run's "
                           f"data.window_us / T and data.stack_bins name the folder)")
    h5_path = repr_dir / f"event_representations{'_ds2_nearest' if int(rep.downsample) == 2 else ''}.h5"
    repr_times = _index(_load_npy(repr_dir / "timestamps_us.npy"), None, str(repr_dir / "timestamps_us.npy"))
    frame_repr = _index(_load_npy(repr_dir / "objframe_idx_2_repr_idx.npy"), None,
                        str(repr_dir / "objframe_idx_2_repr_idx.npy"))
    labels_dir = folder / "labels_v2"
    frame_times = _index(_load_npy(labels_dir / "timestamps_us.npy"), len(frame_repr),
                         str(labels_dir / "timestamps_us.npy"))
    stored = _load_npz(labels_dir / "labels.npz", ("labels", "objframe_idx_2_label_idx"))
    first_row = _index(stored["objframe_idx_2_label_idx"], len(frame_repr), f"{labels_dir / 'labels.npz'}")
    try:
        boxes = as_boxes(stored["labels"], source=str(labels_dir / "labels.npz"))
    except Exception as exc:  # noqa: BLE001 (EventFileError: the box fields)
        raise DatasetError(str(exc)) from None
    bounds = np.append(first_row, len(boxes))
    if len(frame_repr) and (np.any(np.diff(bounds) < 0) or first_row[0] < 0 or np.any(frame_repr < 0)
                            or np.any(frame_repr >= len(repr_times)) or np.any(np.diff(frame_repr) <= 0)):
        raise DatasetError(f"{folder}: label frame indices out of order or out of range")
    if not np.array_equal(repr_times[frame_repr], frame_times):
        raise DatasetError(f"{folder}: the label frames' times differ from their representations' end times")
    # RVT's frames between label frames are evenly spaced (50 ms for 1Mpx, 125 ms for Gen1): the run's slices must
    # be spaced the same, or a recording streamed later would be cut differently from the training data
    spacing = np.diff(repr_times[frame_repr[0]:]) if len(frame_repr) else np.empty(0)
    step = int(rep.window_us) // int(rep.time_steps)
    if len(spacing) >= 2 and abs(float(np.median(spacing)) - step) > 2000:
        raise DatasetError(f"{folder}: RVT's frames here are {int(np.median(spacing))} µs apart but the run's slices "
                           f"{step} µs (data.window_us / T): set data.window_us = {rep.time_steps} x "
                           f"{int(round(float(np.median(spacing)), -3))}")
    h5py = h5py_with_filters("reading RVT's preprocessed .h5 files")
    if not h5_path.is_file():
        raise DatasetError(f"{h5_path}: missing (data.downsample={rep.downsample} reads this file)")
    grid_w, grid_h = rep.grid_size(camera.width, camera.height)
    expected = (len(repr_times), rep.channels, grid_h, grid_w)
    try:
        with h5py.File(h5_path, "r") as handle:
            data = handle.get("data")
            if not isinstance(data, h5py.Dataset) or data.dtype != np.uint8 or tuple(data.shape) != expected:
                got = (data.dtype, tuple(data.shape)) if isinstance(data, h5py.Dataset) else "no dataset 'data'"
                raise DatasetError(f"{h5_path}: expected 'data' uint8 {expected} ({camera.title}, "
                                   f"{rvt_folder_name(rep)}), got {got}")
            check_filters(data, str(h5_path))
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 (h5py's errors about a damaged file, or the filter check's)
        raise DatasetError(f"{h5_path}: {' '.join(str(exc).split())[:200]}") from None
    labels = tuple(boxes[start:end] for start, end in zip(bounds[:-1], bounds[1:]))
    for frame, (t_us, rows) in enumerate(zip(frame_times.tolist(), labels)):
        if len(rows) and np.any(rows["t"] != t_us):
            raise DatasetError(f"{labels_dir / 'labels.npz'}: frame {frame}'s boxes are not all at t={t_us}")
    return RvtSequence(folder.name, h5_path, frame_times, frame_repr, labels, repr_times)


def find_rvt_sequences(split_dir: str | os.PathLike, rep: Representation, camera: Camera) -> list[RvtSequence]:
    """The sequence folders of an RVT split folder, sorted by name.

    Raises:
        DatasetError: the folder does not exist or has no sequence folder; see :func:`open_rvt_sequence`.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: split folder does not exist")
    folders = sorted(path for path in split_dir.iterdir() if (path / _REPR_ROOT).is_dir())
    if not folders:
        raise DatasetError(f"{split_dir}: no RVT sequence folders (<name>/{_REPR_ROOT}/, labels_v2/); "
                           "data.layout=rvt reads RVT's preprocessed dataset")
    return [open_rvt_sequence(folder, rep, camera) for folder in folders]


class RvtDataset(PropheseeDataset):
    """The samples of one split folder of RVT's preprocessed dataset (``data.layout: rvt``): a
    :class:`PropheseeDataset` whose clips are read from RVT's files instead of the cache.

    Takes the arguments of :class:`PropheseeDataset`; ``preprocess_workers``, ``progress`` and ``sample_times``
    have nothing to do (RVT chose its frames when it preprocessed). The labels go through the same clean-up
    (``label_clamp``, ``min_box_size``, ``max_box_width``, ``other_classes``), which leaves RVT's own (already
    cropped and filtered) labels as they are under the camera's settings.
    """

    def __init__(self, split_dir: str | os.PathLike, names, representation: Representation, imgsz: int = 320,
                 most_recent_first: bool = True, label_clamp: str = "reference", min_box_size: float = 0.0,
                 preprocess_workers: int | None = None, progress: bool = True, *, camera: Camera = GEN1,
                 other_classes: str = "error", max_box_width: float | None = None, sample_times: str = "all",
                 input_shape: str = "square", pad_position: str = "center", stride: int = 32) -> None:
        self._settings(split_dir, names, representation, imgsz, most_recent_first, other_classes=other_classes,
                       sample_times=sample_times, input_shape=input_shape, pad_position=pad_position, stride=stride)
        self.sequences = find_rvt_sequences(self.split_dir, representation, camera)
        size = (camera.width, camera.height)
        steps = int(representation.time_steps)
        self.samples, self.index = [], []
        for number, sequence in enumerate(self.sequences):
            source = sequence.h5_path.parents[2] / "labels_v2" / "labels.npz"
            for t_us, boxes, repr_index in zip(sequence.frame_times.tolist(), sequence.frame_labels,
                                               sequence.frame_repr.tolist()):
                if repr_index - steps + 1 < 0:     # RVT's SequenceForRandomAccess drops it too
                    continue
                kept = self._clean(boxes, size, t_us, source, clamp=label_clamp, min_size=float(min_box_size),
                                   other_classes=other_classes, max_box_width=max_box_width)
                self.samples.append(EventSample(sequence.name, int(t_us), boxes, -1, *size, kept))
                self.index.append((number, int(repr_index)))
        self.labels = [self._label_record(sample) for sample in self.samples]
        self.im_files = [sample.im_file for sample in self.samples]
        self.cache_stats = {"built": 0, "skipped": 0}

    def frames(self, index: int) -> np.ndarray:
        """RVT's [T, 2 * bins, H, W] uint8 clip of sample ``index``, slice 0 the oldest."""
        number, repr_index = self.index[index]
        return self.sequences[number].frames(repr_index, int(self.representation.time_steps))
