"""KVM's binary statistics (KVM_GET_STATS_FD), read by name.

The VM stats include pages_4k / pages_2m / pages_1g: the number of present leaf mappings at each
level in KVM's stage-2 (TDP) page tables, which is how the harness observes mapping levels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from . import uapi
from .fdobj import FdObject

ffi = uapi.ffi


@dataclass(frozen=True)
class StatDesc:
    name: str
    flags: int
    exponent: int
    size: int
    offset: int
    bucket_size: int


class Stats(FdObject, Mapping[str, int | tuple[int, ...]]):
    """One stats fd: descriptors parsed once, values read fresh on every lookup."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        header = ffi.new("struct kvm_stats_header *")
        ffi.buffer(header)[:] = os.pread(fd, ffi.sizeof(header[0]), 0)
        self.id = os.pread(fd, header.name_size, header.id_offset).split(b"\0")[0].decode()
        self._data_offset = header.data_offset
        desc_size = ffi.sizeof("struct kvm_stats_desc") + header.name_size
        raw = os.pread(fd, desc_size * header.num_desc, header.desc_offset)
        self.descs: dict[str, StatDesc] = {}
        for i in range(header.num_desc):
            chunk = raw[i * desc_size:(i + 1) * desc_size]
            d = ffi.from_buffer("struct kvm_stats_desc *", chunk)
            name = ffi.string(d.name).decode()
            self.descs[name] = StatDesc(name, d.flags, d.exponent, d.size, d.offset,
                                        d.bucket_size)

    def __getitem__(self, name: str) -> int | tuple[int, ...]:
        d = self.descs[name]
        raw = os.pread(self.fd, 8 * d.size, self._data_offset + d.offset)
        values = tuple(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))
        return values[0] if d.size == 1 else values

    def __iter__(self) -> Iterator[str]:
        return iter(self.descs)

    def __len__(self) -> int:
        return len(self.descs)

    def snapshot(self) -> dict[str, int | tuple[int, ...]]:
        """Every stat read now."""
        return {name: self[name] for name in self.descs}

