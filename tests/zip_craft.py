"""Hand-made zip archives for the attack corpus and the fuzz test: what ``zipfile`` will not write.

:func:`raw_zip` lays out local headers, data, a central directory and an end record from :class:`Entry`
values whose every field can lie (declared size, CRC, name bytes, compressed payload); :func:`deflate_bomb`
makes a raw deflate stream that inflates to many zeros from a small one; :func:`rezip` copies an archive
through ``zipfile`` with members replaced, renamed or repeated.
"""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    name: bytes
    data: bytes = b""  # what the member holds (its CRC and size come from here unless given)
    deflate: bool = False
    payload: bytes | None = None  # the bytes stored (compressed already) in place of ``data``
    declared_bytes: int | None = None  # uncompressed size written into the headers
    crc: int | None = None
    flags: int = 0x800


def deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def deflate_bomb(zero_mib: int) -> bytes:
    """A raw deflate stream of about ``zero_mib`` KiB that inflates to ``zero_mib`` MiB of zeros (made cheaply:
    one fully flushed block repeated, then an empty final block)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(b"\0" * 2**20) + packer.flush(zlib.Z_FULL_FLUSH)
    return block * zero_mib + b"\x03\x00"


def raw_zip(entries: Iterable[Entry]) -> bytes:
    local, central = bytearray(), bytearray()
    count = 0
    for e in entries:
        count += 1
        payload = e.payload if e.payload is not None else (deflate_raw(e.data) if e.deflate else e.data)
        usize = len(e.data) if e.declared_bytes is None else e.declared_bytes
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        method = 8 if e.deflate else 0
        zip64 = usize >= 0xFFFFFFFF
        short_usize = 0xFFFFFFFF if zip64 else usize
        extra = struct.pack("<HHQ", 1, 8, usize) if zip64 else b""
        offset = len(local)
        local += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                45 if zip64 else 20,
                e.flags,
                method,
                0,
                0x21,
                crc,
                len(payload),
                short_usize,
                len(e.name),
                len(extra),
            )
            + e.name
            + extra
            + payload
        )
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                45 if zip64 else 20,
                45 if zip64 else 20,
                e.flags,
                method,
                0,
                0x21,
                crc,
                len(payload),
                short_usize,
                len(e.name),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
            + e.name
            + extra
        )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


def rezip(src: Path, dst: Path, edit: Callable[[str, bytes], list[tuple[str, bytes]]]) -> Path:
    """Copy ``src`` member by member; ``edit(name, data)`` returns the (name, data) pairs written in its place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for name in zin.namelist():
                for new_name, data in edit(name, zin.read(name)):
                    zout.writestr(new_name, data)
    return dst
