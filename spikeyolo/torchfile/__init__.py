"""One bounded reader of torch zip files that never runs anything the file names (checkpoints are data).

Every checkpoint spikeyolo reads (its own, a reference BICLab/SpikeYOLO one, a stock ultralytics one) goes
through :func:`read_torch_zip` instead of ``torch.load``. What it admits:

* torch's zip format only (torch >= 1.6), read with :mod:`zipfile`: one ``<archive>/data.pkl``, no
  TorchScript ``code/``, little-endian, and every record *stored* (torch never compresses), so a record's
  size is its size in the file; all records together may not hold more bytes than the file (overlapping
  records are refused), so nothing is inflated beyond the file.
* The pickle is read by a pure-Python unpickler (``pickle._Unpickler``) whose opcodes are overridden:
  globals resolve only to this module's own functions (tensor and numpy-scalar rebuilders, typed-storage
  names, ``OrderedDict``, ``set``, ``torch.Size``, ``torch.device``) and to the caller's inert stand-in
  classes (:class:`StandIn` subclasses, by qualified name). ``BUILD`` sets state only on stand-ins, on the
  reader's numpy dtype and on an ``OrderedDict``'s plain ``_metadata`` (torch state_dicts carry it); never on
  a tensor (``Tensor.__setstate__`` skips torch's overlap checks). ``NEWOBJ`` makes stand-ins only; the
  protocol 0/1 object opcodes (``INST``, ``OBJ``) are refused.
* Dict keys and set members are checked when they are inserted (before anything hashes them): str of at
  most ``MAX_KEY_CHARS`` characters, int of at most ``MAX_KEY_INT_BITS`` bits, float, bool or None.
* Tensors are rebuilt from the storage records by :func:`_rebuild_tensor`: rank, sizes, strides and offset
  checked against the storage, and the bytes of all rebuilt tensors together (a view rebuilt N times
  counts N times) may not exceed the bytes of the file's storage records (no fan-out of one storage).
* The result is walked once (iteratively): at most ``MAX_DEPTH`` levels, at most ``MAX_VISITS`` items
  reachable counting every path (shared containers count once per path), no object inside itself.

Every refusal is one line made of bounded text (:func:`short_repr`), never the repr of what the file holds.
"""

from spikeyolo.torchfile.bounds import (MAX_DEPTH, MAX_DIM_SIZE, MAX_EMPTY_VOLUME, MAX_ITEMS, MAX_KEY_CHARS,
                                        MAX_KEY_INT_BITS, MAX_REPR_CHARS, MAX_TENSOR_DIMS, MAX_VISITS, Refusal,
                                        short_repr)
from spikeyolo.torchfile.reader import pickle_globals, read_error, read_torch_zip, unpickle_torch_zip
from spikeyolo.torchfile.rebuild import StandIn, _rebuild_tensor, stand_in_classes

__all__ = ["Refusal", "StandIn", "stand_in_classes", "read_torch_zip", "unpickle_torch_zip", "pickle_globals",
           "read_error", "short_repr", "MAX_DEPTH", "MAX_VISITS", "MAX_ITEMS", "MAX_KEY_CHARS", "MAX_KEY_INT_BITS",
           "MAX_TENSOR_DIMS", "MAX_DIM_SIZE", "MAX_EMPTY_VOLUME", "MAX_REPR_CHARS", "_rebuild_tensor"]
