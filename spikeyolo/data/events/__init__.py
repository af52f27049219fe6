"""Event-camera data: the camera catalog (:mod:`~spikeyolo.data.events.cameras`: sensor sizes, class names), Prophesee
``.dat`` events, Gen1 / 1Mpx ``*_bbox.npy`` labels, representations, synthetic data.

Only numpy is imported here. See docs/events.md for the file formats and the Gen1 folder layout.
"""

from spikeyolo.errors import EventFileError
from spikeyolo.data.events.boxes import (BOX_DTYPE, BOX_FILE_DTYPE, BOX_FILE_DTYPE_LEGACY, as_boxes, read_boxes,
                                         write_boxes)
from spikeyolo.data.events.cameras import CAMERAS, GEN1, GEN4, BoxFilter, Camera, get_camera, sensor_size
from spikeyolo.data.events.dat import (EVENT_DTYPE, EVENT_TYPE_CD, EVENT_TYPE_TD, DatHeader, iter_dat,
                                       read_dat, read_dat_header, write_dat)
from spikeyolo.data.events.representations import event_histogram, spikeyolo_frames, stacked_histogram, voxel_grid
from spikeyolo.data.events.recordings import (RECORDING_SUFFIXES, RecordingInfo, detect_format, iter_recording,
                                              open_recording, read_recording, recording_spans, recording_windows)

__all__ = ["CAMERAS", "GEN1", "GEN4", "BoxFilter", "Camera", "get_camera", "sensor_size",
           "EventFileError", "EVENT_DTYPE", "EVENT_TYPE_TD", "EVENT_TYPE_CD", "DatHeader",
           "read_dat", "read_dat_header", "iter_dat", "write_dat", "BOX_DTYPE", "BOX_FILE_DTYPE",
           "BOX_FILE_DTYPE_LEGACY", "as_boxes", "read_boxes", "write_boxes", "spikeyolo_frames", "event_histogram",
           "stacked_histogram", "voxel_grid", "RecordingInfo", "detect_format", "open_recording", "iter_recording",
           "read_recording", "recording_windows", "recording_spans", "RECORDING_SUFFIXES"]
