"""The bounds of :mod:`spikeyolo.torchfile` in one place, the refusal it raises, and bounded text for messages."""

from __future__ import annotations

import collections
from typing import Any

# ------------------------------------------------------------------------------------------------- the bounds
MAX_DEPTH = 128               # container levels of the result (a YOLO module tree is ~40, a spikeyolo payload ~6)
MAX_VISITS = 1_000_000        # items reachable from the result, counting each path to a shared container
MAX_ITEMS = 4_000_000         # items the pickle puts into lists, dicts, sets and mark-tuples, in total
MAX_KEY_CHARS = 4096          # a str dict key or set member (state_dict keys are ~100)
MAX_KEY_INT_BITS = 64         # an int dict key or set member
MAX_TENSOR_DIMS = 16          # a tensor's rank
MAX_DIM_SIZE = 2**31 - 1      # one tensor dimension (size or stride), and a storage offset is below 2**40
MAX_EMPTY_VOLUME = 2**16      # product of the sizes (zeros as 1) of a tensor beyond its storage's elements
MAX_REPR_CHARS = 60           # of a value quoted in a refusal


class Refusal(Exception):
    """What the file holds is refused; the text is one bounded line (the reader adds the file)."""


def short_repr(value: Any, limit: int = MAX_REPR_CHARS) -> str:
    """A bounded, constant-time description of ``value`` for messages (never recurses into containers)."""
    kind = type(value)
    if value is None or kind in (bool, float):
        text = repr(value)
    elif kind is int:
        text = repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    elif kind in (str, bytes):
        text = repr(value[:limit])
    elif kind in (tuple, list) and len(value) <= 8 and all(
            v is None or type(v) in (bool, float) or type(v) is int and v.bit_length() <= 64 for v in value):
        text = repr(value)
    elif kind in (tuple, list, dict, set, frozenset, collections.OrderedDict):
        text = f"<{kind.__name__} of {len(value)} items>"
    else:
        text = f"<{kind.__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
