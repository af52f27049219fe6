"""The records of a torch zip file for :mod:`spikeyolo.torchfile`: stored records only, no larger than the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from spikeyolo.torchfile.bounds import Refusal, short_repr
from spikeyolo.torchfile.rebuild import _Storage

# ------------------------------------------------------------------------------------------------- the archive
class _Archive:
    """The records of a torch zip file: stored ones only, together no larger than the file."""

    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise Refusal("refusing the legacy (pre-1.6, non-zip) torch format, which only unrestricted "
                          "unpicklers read; re-save it with torch >= 1.6") from None
        self.size = path.stat().st_size
        infos = self.zip.infolist()
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                    or info.file_size > self.size:
                raise Refusal(f"refusing the compressed or oversized record {short_repr(info.filename, 200)[1:-1]}")
            total += info.file_size
        if total > self.size:
            raise Refusal(f"refusing records of {total} bytes in a file of {self.size} bytes (overlapping records)")
        names = [info.filename for info in infos]
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise Refusal("refusing a zip file that is not one torch checkpoint (no single <archive>/data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        if any(name.startswith((self.prefix + "code/", self.prefix + "constants.pkl")) for name in names):
            raise Refusal("refusing a TorchScript archive")
        if self.prefix + "byteorder" in names and self.read(self.prefix + "byteorder").strip() != b"little":
            raise Refusal("refusing a big-endian checkpoint")
        self.tensor_budget = sum(info.file_size for info in infos if info.filename.startswith(self.prefix + "data/"))
        self.tensor_bytes = 0
        self.storages: dict[str, _Storage] = {}

    def read(self, name: str) -> bytearray:
        info = self.zip.getinfo(name)  # stored and bounded: checked in __init__
        raw = bytearray(info.file_size)
        with self.zip.open(info) as handle:
            if handle.readinto(raw) != info.file_size or handle.read(1):
                raise Refusal(f"refusing the truncated record {short_repr(name, 200)[1:-1]}")
        return raw

    def account(self, nbytes: int) -> None:
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.tensor_budget:
            raise Refusal(f"refusing tensors of more than {self.tensor_budget} bytes in total (what the file's "
                          "storage records hold)")

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        name = f"{self.prefix}data/{key}"
        if name not in self.storages:
            if name not in self.zip.NameToInfo:
                raise Refusal(f"refusing a tensor whose storage record {short_repr(key)} is missing")
            raw = self.read(name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise Refusal(f"refusing storage {key}: {numel} elements in {len(raw)} bytes")
            flat = torch.frombuffer(raw, dtype=torch.uint8)[: numel * itemsize] if numel else \
                torch.empty(0, dtype=torch.uint8)
            self.storages[name] = _Storage(flat.view(dtype), self)
        storage = self.storages[name]
        if storage.flat.dtype != dtype:
            raise Refusal(f"refusing storage {key} read as two dtypes")
        return storage
