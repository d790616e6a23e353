"""The one zip reader for every archive tritongen inspects (model files and ``.npz`` samples).

Python's ``zipfile`` and torch's reader (miniz, inside ``PyTorchFileReader``) can see different things in one
crafted archive: ``zipfile`` returns the last of two same-named members, miniz finds names case-insensitively
by binary search; ``zipfile`` shifts every offset when bytes are prepended, miniz does not; ``zipfile`` walks the
central directory by its byte size, miniz by its entry count. :func:`open_archive` parses the archive itself and
refuses anything on which such readers could disagree, so the bytes tritongen checks are the bytes torch loads:

* the end record must be the file's last 22 bytes (no comment, nothing after it), with a zip64 record and
  locator (as torch writes them) directly before it, agreeing with it; the central directory ends exactly there;
* entry count, byte size and offsets agree; one disk; the first member starts at byte 0 and members follow
  each other without overlap or gaps (a data descriptor excepted), all before the central directory;
* each local header carries the central directory's name, method and flags;
* names are UTF-8 (or ASCII), relative, without ``..``, ``.``, empty parts, backslashes, drive letters or
  control characters, and unique even ignoring ASCII case;
* only stored or deflated, unencrypted members; a stored member's sizes agree; declared sizes are bounded,
  each and in total relative to the file's size (an inflating "zip bomb" is refused before any is read).

Members are read with a byte limit, streamed and inflated in chunks, never trusting the declared size: a member
that inflates to more (or less) than it declares, or whose CRC differs, is refused.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import TritongenError

MAX_MEMBERS = 100_000
MAX_MEMBER_BYTES = 32 * 2**30  # no single record of a model tritongen can export is larger
MAX_INFLATE_RATIO = 32  # all members together may unpack to at most this many times the file's size ...
INFLATE_SLACK_BYTES = 64 * 2**20  # ... plus this much (small archives of compressed text)
MAX_CENTRAL_DIR_BYTES = 64 * 2**20
_CHUNK_BYTES = 2**20

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record: 22 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory record: 56 bytes
_LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator: 20 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory header: 46 bytes
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header: 30 bytes
_DRIVE = re.compile(r"^[A-Za-z]:")
_FLAG_ENCRYPTED = 0x1
_FLAG_DESCRIPTOR = 0x8
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_STORED, _DEFLATED = 0, 8


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the local header
    data_offset: int
    compressed_bytes: int
    size_bytes: int  # declared uncompressed size
    method: int
    crc: int
    flags: int
    stamp: tuple[int, int, int] = (0, 0, 0)  # version needed, time, date: the local header must repeat them


class Archive:
    """A checked zip archive (see the module docstring); read members with :meth:`read`."""

    def __init__(self, path: Path, fh: BinaryIO, members: list[Member], what: str, fix: str) -> None:
        self.path = path
        self.what = what
        self.fix = fix
        self._fh = fh
        self.members = members
        self._by_name = {m.name: m for m in members}

    @property
    def names(self) -> list[str]:
        """Member names in central directory order (torch takes the archive's root folder from the first)."""
        return [m.name for m in self.members]

    def size_bytes(self, name: str) -> int:
        """The member's declared (and, once read, checked) uncompressed size."""
        return self._by_name[name].size_bytes

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def read(self, name: str, limit_bytes: int) -> bytearray:
        """The member's bytes; refused when it declares (or inflates to) more than ``limit_bytes``."""
        member = self._by_name[name]
        if member.size_bytes > limit_bytes:
            raise self._error(
                f"its member {name} declares {member.size_bytes} bytes, more than the {limit_bytes} "
                "tritongen reads from such a member"
            )
        out, at = bytearray(member.size_bytes), 0  # the declared size, bounded above; _chunks never yields more
        for chunk in self._chunks(member):
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        return out

    def verify(self) -> None:
        """Inflate every member in chunks (nothing kept): each must match its declared size and CRC."""
        for member in self.members:
            for _chunk in self._chunks(member):
                pass

    def _chunks(self, member: Member) -> Iterator[bytes]:
        self._fh.seek(member.data_offset)
        left_in, left_out, crc = member.compressed_bytes, member.size_bytes, 0
        inflater = zlib.decompressobj(-15) if member.method == _DEFLATED else None
        while inflater is None or not inflater.eof:
            pending = inflater.unconsumed_tail if inflater is not None else b""
            if not pending and left_in:
                pending = self._fh.read(min(_CHUNK_BYTES, left_in))
                if not pending:
                    raise self._error(f"its member {member.name} is cut short")
                left_in -= len(pending)
            try:
                # One byte more than declared may come out: that is how a lie about the size is caught.
                chunk = pending if inflater is None else inflater.decompress(pending, min(_CHUNK_BYTES, left_out + 1))
            except zlib.error as exc:
                raise self._error(f"its member {member.name} is damaged ({exc})") from None
            if not chunk and not pending:
                break  # nothing left to read and nothing more comes out
            left_out -= len(chunk)
            if left_out < 0:
                raise self._error(
                    f"its member {member.name} unpacks to more than the {member.size_bytes} bytes it declares"
                )
            crc = zlib.crc32(chunk, crc)
            if chunk:
                yield chunk
        if left_out or (inflater is not None and not inflater.eof) or crc != member.crc:
            raise self._error(f"its member {member.name} is damaged (its size or checksum differs from its header)")

    def _error(self, problem: str) -> TritongenError:
        return archive_error(self.path, self.what, self.fix, problem)


def archive_error(path: Path, what: str, fix: str, problem: str) -> TritongenError:
    return TritongenError(f"{what} {path} is a zip archive tritongen cannot read safely: {problem}", fix)


def open_archive(path: Path, what: str, fix: str, verify: bool = False) -> Archive:
    """Open ``path`` as a checked zip archive. ``verify`` also inflates every member to check its size and CRC.
    ``what`` names the file in messages ("model file"), ``fix`` says what to do about a refused one.

    Raises :class:`TritongenError` for a damaged archive or one that breaks a rule of the module docstring."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TritongenError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    try:
        members = _members(path, fh, lambda problem: archive_error(path, what, fix, problem))
        archive = Archive(path, fh, members, what, fix)
        if verify:
            archive.verify()
        return archive
    except OSError as exc:
        fh.close()
        raise TritongenError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    except BaseException:
        fh.close()
        raise


def _members(path: Path, fh: BinaryIO, refuse: Callable[[str], TritongenError]) -> list[Member]:
    fh.seek(0, 2)
    size = fh.tell()
    entries, cd_size, cd_offset, cd_end = _end_records(fh, size, refuse)
    if entries > MAX_MEMBERS:
        raise refuse(f"it declares {entries} members, more than the {MAX_MEMBERS} tritongen reads")
    if cd_size > MAX_CENTRAL_DIR_BYTES or cd_offset + cd_size != cd_end:
        raise refuse("its central directory does not end where its end record says")
    fh.seek(cd_offset)
    directory = fh.read(cd_size)
    members: list[Member] = []
    seen: dict[bytes, str] = {}
    at = 0
    for _ in range(entries):
        if at + _CENTRAL.size > len(directory):
            raise refuse("its central directory is shorter than its entry count says")
        (
            sig,
            _made_by,
            needed,
            flags,
            method,
            time,
            date,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            disk,
            _internal,
            _external,
            offset,
        ) = _CENTRAL.unpack_from(directory, at)
        if sig != b"PK\x01\x02" or disk not in (0, 0xFFFF):
            raise refuse("its central directory is damaged")
        raw_name = directory[at + _CENTRAL.size : at + _CENTRAL.size + name_len]
        extra = directory[at + _CENTRAL.size + name_len : at + _CENTRAL.size + name_len + extra_len]
        at += _CENTRAL.size + name_len + extra_len + comment_len
        if at > len(directory) or len(raw_name) != name_len:
            raise refuse("its central directory is damaged")
        usize, csize, offset = _zip64_values(extra, usize, csize, offset, refuse)
        name = _checked_name(raw_name, flags, refuse)
        key = raw_name.lower()  # miniz (torch) matches names ignoring ASCII case
        if key in seen:
            both = f"{name!r}"
            if seen[key] != name:
                both = f"{seen[key]!r} and {name!r} (one name to torch, which ignores case)"
            raise refuse(f"it holds two members named {both}, and a loader could read either copy")
        seen[key] = name
        if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
            raise refuse(f"its member {name} is encrypted")
        if method not in (_STORED, _DEFLATED):
            raise refuse(f"its member {name} is compressed with method {method} (only stored and deflate are read)")
        if method == _STORED and csize != usize:
            raise refuse(f"its stored member {name} declares two different sizes")
        if usize > MAX_MEMBER_BYTES:
            raise refuse(f"its member {name} declares {usize} bytes, more than the {MAX_MEMBER_BYTES} allowed")
        members.append(Member(name, offset, -1, csize, usize, method, crc, flags, (needed, time, date)))
    if at != len(directory):
        raise refuse("its central directory holds more than its entry count says")
    total = sum(m.size_bytes for m in members)
    allowed = MAX_INFLATE_RATIO * size + INFLATE_SLACK_BYTES
    if total > allowed:
        raise refuse(f"its members declare {total} bytes unpacked from a {size}-byte file (at most {allowed} allowed)")
    return _located(fh, members, cd_offset, refuse)


def _end_records(fh: BinaryIO, size: int, refuse) -> tuple[int, int, int, int]:
    """``(entries, central directory size, its offset, where it must end)`` from the end records."""
    if size < _EOCD.size:
        raise refuse("it is truncated or damaged (it is too short to be a zip archive)")
    fh.seek(size - _EOCD.size)
    sig, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment_len = _EOCD.unpack(fh.read(_EOCD.size))
    if sig != b"PK\x05\x06" or comment_len:
        raise refuse("it is truncated or damaged (its end record is not its last 22 bytes, or a comment follows it)")
    eocd_at = size - _EOCD.size
    if eocd_at >= _LOCATOR.size:
        fh.seek(eocd_at - _LOCATOR.size)
        loc_sig, loc_disk, record_at, disks = _LOCATOR.unpack(fh.read(_LOCATOR.size))
        if loc_sig == b"PK\x06\x07":
            if loc_disk != 0 or disks != 1 or record_at + _EOCD64.size != eocd_at - _LOCATOR.size:
                raise refuse("its zip64 end records are not where its locator says")
            fh.seek(record_at)
            (
                sig64,
                record_bytes,
                _made,
                _needed,
                disk64,
                cd_disk64,
                disk_entries64,
                entries64,
                cd_size64,
                cd_offset64,
            ) = _EOCD64.unpack(fh.read(_EOCD64.size))
            if sig64 != b"PK\x06\x06" or record_bytes != _EOCD64.size - 12 or disk64 or cd_disk64:
                raise refuse("its zip64 end record is damaged")
            for short, full, blank in (
                (disk_entries, disk_entries64, 0xFFFF),
                (entries, entries64, 0xFFFF),
                (cd_size, cd_size64, 0xFFFFFFFF),
                (cd_offset, cd_offset64, 0xFFFFFFFF),
            ):
                if short not in (full, blank):
                    raise refuse("its end record and zip64 end record disagree")
            if disk_entries64 != entries64:
                raise refuse("it spans several disks")
            return entries64, cd_size64, cd_offset64, record_at
    if disk or cd_disk or disk_entries != entries:
        raise refuse("it spans several disks")
    return entries, cd_size, cd_offset, eocd_at


def _zip64_values(extra: bytes, usize: int, csize: int, offset: int, refuse) -> tuple[int, int, int]:
    """Sizes and offset, with the zip64 extra field's values in place of the 0xFFFFFFFF placeholders."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + length]
        if len(body) != length:
            raise refuse("a member's extra field is damaged")
        if tag == 0x0001:
            values = [v for v in (usize, csize, offset) if v == 0xFFFFFFFF]
            if len(body) < 8 * len(values):
                raise refuse("a member's zip64 extra field is damaged")
            full = list(struct.unpack_from(f"<{len(values)}Q", body)) if values else []
            usize = full.pop(0) if usize == 0xFFFFFFFF else usize
            csize = full.pop(0) if csize == 0xFFFFFFFF else csize
            offset = full.pop(0) if offset == 0xFFFFFFFF else offset
            return usize, csize, offset
        at += 4 + length
    if at != len(extra):
        raise refuse("a member's extra field is damaged")
    if 0xFFFFFFFF in (usize, csize, offset):
        raise refuse("a member's zip64 sizes are missing")
    return usize, csize, offset


def _checked_name(raw: bytes, flags: int, refuse) -> str:
    try:
        name = raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("ascii")
    except UnicodeDecodeError:
        raise refuse(f"a member name ({raw[:80]!r}) is not UTF-8 text") from None
    shown = repr(name[:80])
    if not name or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\\\u2028\u2029" for c in name):
        raise refuse(f"its member name {shown} is empty or holds a backslash or control character")
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if name.startswith("/") or _DRIVE.match(name) or any(p in ("", ".", "..") for p in parts):
        raise refuse(f"its member name {shown} is absolute or holds an empty, '.' or '..' part")
    return name


def _located(fh: BinaryIO, members: list[Member], cd_offset: int, refuse) -> list[Member]:
    """Members with their data offsets, after checking each local header against the central directory and
    that the members tile the file from byte 0 to the central directory (each data descriptor matching too)."""
    located = []
    for m in members:
        fh.seek(m.offset)
        header = fh.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            raise refuse(f"its member {m.name} lies outside the file")
        sig, local_needed, flags, method, time, date, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(header)
        if (
            sig != b"PK\x03\x04"
            or fh.read(name_len) != m.name.encode("utf-8")
            or (flags, method, (local_needed, time, date)) != (m.flags, m.method, m.stamp)
        ):
            raise refuse(f"the local header of member {m.name} differs from the central directory")
        sizes = (crc, csize, usize)
        declared = (m.crc, m.compressed_bytes, m.size_bytes)
        if not flags & _FLAG_DESCRIPTOR and 0xFFFFFFFF not in sizes and sizes != declared:
            raise refuse(f"the local header of member {m.name} declares other sizes than the central directory")
        data_offset = m.offset + _LOCAL.size + name_len + extra_len
        located.append(dataclasses.replace(m, data_offset=data_offset))
    end, previous = 0, None  # where the previous member's data ends, and that member
    for m in sorted(located, key=lambda m: m.offset) + [None]:  # type: ignore[assignment]  # None: the end
        start = cd_offset if m is None else m.offset
        if start < end or (start > end and not _descriptor_fits(fh, previous, end, start - end)):
            where = "its central directory" if m is None else f"member {m.name}"
            raise refuse(f"{where} overlaps another member or leaves a gap before it")
        if m is not None:
            end, previous = m.data_offset + m.compressed_bytes, m
    return located


def _descriptor_fits(fh: BinaryIO, member: Member | None, at: int, gap: int) -> bool:
    """Whether the ``gap`` bytes at ``at`` are exactly ``member``'s data descriptor (its CRC and sizes)."""
    if member is None or not member.flags & _FLAG_DESCRIPTOR or gap not in (12, 16, 20, 24):
        return False
    fh.seek(at)
    found = fh.read(gap)
    sizes = (member.compressed_bytes, member.size_bytes)
    body = (
        struct.pack("<IQQ", member.crc, *sizes)
        if gap in (20, 24)
        else struct.pack("<I", member.crc) + b"".join(struct.pack("<I", v) for v in sizes if v < 2**32)
    )
    return found == (b"PK\x07\x08" + body if gap in (16, 24) else body)
