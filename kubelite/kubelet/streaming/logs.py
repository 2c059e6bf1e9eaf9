"""Reading CRI-format container logs for `kubectl logs`: tail, since, timestamps, limitBytes, follow.

A log is the current file `N.log` plus the files rotated aside (`N.log.<UTC time>[.k]`, oldest by mtime first).
Lines are `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>`; P pieces are joined until the F piece that ends
the line. Following reads on from where the file ended, across rotations, until the container stops.
"""

from __future__ import annotations

import asyncio
import calendar
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kubelite.kubelet.runtime.logs import timestamp as format_timestamp

READ_SIZE = 64 * 1024
POLL_INTERVAL = 0.1
"""Seconds between looks at a followed file that has nothing new."""
_TIMESTAMP = re.compile(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


@dataclass(slots=True)
class LogOptions:
    """PodLogOptions as the kubelet applies them; since_ns is absolute (nanoseconds since the epoch)."""

    follow: bool = False
    tail_lines: int | None = None
    since_ns: int | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


@dataclass(slots=True)
class CriLine:
    """One line of a CRI log file."""

    timestamp: bytes
    stream: bytes
    partial: bool
    content: bytes


def parse_timestamp(raw: bytes) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp with 0-9 fraction digits; ValueError if malformed."""
    match = _TIMESTAMP.fullmatch(raw)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {raw!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match[8]
    if zone != b"Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[:1] == b"+" else -offset
    fraction = match[7] or b""
    return seconds * 1_000_000_000 + int(fraction.ljust(9, b"0") or b"0")


def parse_line(line: bytes) -> CriLine | None:
    """Split a CRI log line (without its newline); None when it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    return CriLine(parts[0], parts[1], parts[2].split(b":", 1)[0] == b"P", parts[3] if len(parts) == 4 else b"")


@dataclass(slots=True)
class LogLine:
    """A whole line of output: the timestamp of its first piece and its content with the newline."""

    timestamp: bytes
    stream: bytes
    content: bytes

    def render(self, timestamps: bool) -> bytes:
        """The bytes kubectl shows, with the RFC3339Nano time first when asked."""
        if not timestamps:
            return self.content
        try:
            stamp = format_timestamp(parse_timestamp(self.timestamp))
        except ValueError:
            stamp = self.timestamp
        return stamp + b" " + self.content


@dataclass
class LineAssembler:
    """Joins P pieces (per stream) into whole lines; carries an unfinished last line between reads."""

    _rest: bytes = b""
    _pieces: dict[bytes, tuple[bytes, list[bytes]]] = field(default_factory=dict)

    def feed(self, data: bytes) -> list[LogLine]:
        """The whole lines that data completes."""
        *complete, self._rest = (self._rest + data).split(b"\n")
        return [line for raw in complete if (line := self._assemble(raw)) is not None]

    def end_file(self) -> list[LogLine]:
        """At the end of a rotated file: a last line cut short (no newline) ends there, not in the next file."""
        rest, self._rest = self._rest, b""
        return [line for line in [self._assemble(rest)] if line is not None] if rest else []

    def finish(self) -> list[LogLine]:
        """At the end of the log: an unterminated last line and unfinished pieces, as whole lines."""
        lines = [line for line in [self._assemble(self._rest)] if line is not None] if self._rest else []
        self._rest = b""
        for stream, (stamp, pieces) in self._pieces.items():
            lines.append(LogLine(stamp, stream, b"".join(pieces) + b"\n"))
        self._pieces.clear()
        return lines

    def _assemble(self, raw: bytes) -> LogLine | None:
        parsed = parse_line(raw)
        if parsed is None:
            return None
        stamp, pieces = self._pieces.pop(parsed.stream, (parsed.timestamp, []))
        pieces.append(parsed.content)
        if parsed.partial:
            self._pieces[parsed.stream] = (stamp, pieces)
            return None
        return LogLine(stamp, parsed.stream, b"".join(pieces) + b"\n")


def rotated_files(path: Path) -> list[Path]:
    """The files rotated aside from path, oldest first (compressed ones are not read)."""
    prefix = f"{path.name}."
    try:
        entries = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and not p.name.endswith(".gz")]
    except FileNotFoundError:
        return []
    stamped = []
    for entry in entries:
        try:
            stamped.append((entry.stat().st_mtime_ns, entry.name, entry))
        except FileNotFoundError:
            continue
    return [p for _, _, p in sorted(stamped)]


class LineFilter:
    """Applies since and limitBytes to whole lines and renders them."""

    def __init__(self, options: LogOptions):
        self.options = options
        self.remaining = options.limit_bytes if options.limit_bytes is not None else -1
        self._since_fixed = format_timestamp(options.since_ns) if options.since_ns is not None else None

    @property
    def exhausted(self) -> bool:
        """Whether limitBytes has been reached."""
        return self.remaining == 0

    def _wanted(self, line: LogLine) -> bool:
        if self._since_fixed is None:
            return True
        stamp = line.timestamp
        if len(stamp) == len(self._since_fixed) and stamp.endswith(b"Z"):
            return stamp >= self._since_fixed
        try:
            return parse_timestamp(stamp) >= (self.options.since_ns or 0)
        except ValueError:
            return True

    def render(self, lines: list[LogLine]) -> bytes:
        """The output of lines that pass since, cut at the byte limit."""
        out = b"".join(line.render(self.options.timestamps) for line in lines if self._wanted(line))
        if self.remaining >= 0:
            out = out[:self.remaining]
            self.remaining -= len(out)
        return out


def _read_all(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _open(path: Path) -> BinaryIO | None:
    """The file opened for reading, or None if it does not exist (yet, or any more)."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller keeps it open while following
    except FileNotFoundError:
        return None


def _chunks_of(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as rotated:
            while chunk := rotated.read(READ_SIZE):
                yield chunk
    except FileNotFoundError:
        return


def tail_lines(current: bytes, older: list[Path], count: int,
               final: bool = True) -> tuple[list[LogLine], LineAssembler]:
    """The last count whole lines of the rotated files plus current, reading older files only as needed (until
    more than count lines: the first may have begun in an older file); and the assembler holding what current
    leaves unfinished (with final, that counts as a line too: nothing follows)."""
    contents = [current]
    remaining = list(older)
    while True:
        assembler = LineAssembler()
        lines = [line for content in contents[:-1] for line in assembler.feed(content) + assembler.end_file()]
        lines += assembler.feed(contents[-1]) + (assembler.finish() if final else [])
        if len(lines) > count or not remaining:
            return (lines[len(lines) - count:] if count else []), assembler
        contents.insert(0, _read_all(remaining.pop()))


class LogReader:
    """One `kubectl logs` request over a container's log files."""

    def __init__(self, path: Path, options: LogOptions, running: Callable[[], Awaitable[bool]] | None = None):
        self.path = path
        self.options = options
        self.running = running
        self.filter = LineFilter(options)
        self._handle: BinaryIO | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The output in chunks; with follow, new lines as they are written until `running()` says no."""
        self._handle = _open(self.path)
        if self._handle is None:
            return
        try:
            async for out in self._read():
                if out:
                    yield out
                if self.filter.exhausted:
                    return
        finally:
            self._handle.close()

    async def _read(self) -> AsyncIterator[bytes]:
        assert self._handle is not None
        older = rotated_files(self.path)
        if self.options.tail_lines is not None:
            current = await asyncio.to_thread(self._handle.read)
            lines, assembler = await asyncio.to_thread(tail_lines, current, older, self.options.tail_lines,
                                                       not self.options.follow)
            yield self.filter.render(lines)
        else:
            assembler = LineAssembler()
            for rotated in older:
                for chunk in _chunks_of(rotated):
                    yield self.filter.render(assembler.feed(chunk))
                yield self.filter.render(assembler.end_file())
            while chunk := await asyncio.to_thread(self._handle.read, READ_SIZE):
                yield self.filter.render(assembler.feed(chunk))
        if self.options.follow and self.running is not None:
            async for out in self._follow(assembler):
                yield out
        yield self.filter.render(assembler.finish())

    def _rotated_away(self) -> bool:
        """Whether the path now names another file than the one open (renamed aside, a new one in its place)."""
        assert self._handle is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    async def _follow(self, assembler: LineAssembler) -> AsyncIterator[bytes]:
        """New output until the container stops and the file is drained; moves to the new file on rotation."""
        assert self._handle is not None and self.running is not None
        stopping = False
        while True:
            if chunk := self._handle.read(READ_SIZE):
                yield self.filter.render(assembler.feed(chunk))
                continue
            if self._rotated_away():
                replacement = _open(self.path)
                if replacement is None:
                    await asyncio.sleep(POLL_INTERVAL)
                    continue
                self._handle.close()
                self._handle = replacement
                continue
            if stopping:
                return
            stopping = not await self.running()
            await asyncio.sleep(POLL_INTERVAL)
