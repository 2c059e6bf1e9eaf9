"""Container logs in the CRI format (`<RFC3339Nano> <stream> <P|F> <line>`) with size-based rotation.

A container writes into FIFOs; a pump copies each FIFO into the log file, line by line, tagging lines longer than
MAX_LINE as partial (P) pieces the way containerd does, and hands every chunk to attach listeners.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

MAX_LINE = 16 * 1024
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 5
READ_SIZE = 65536


def timestamp(ns: int) -> bytes:
    """RFC 3339 with nanoseconds in UTC, as CRI log lines start."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % nanos


def format_line(ns: int, stream: str, partial: bool, content: bytes) -> bytes:
    """One CRI log line."""
    return b"%s %s %s %s\n" % (timestamp(ns), stream.encode(), b"P" if partial else b"F", content)


class LineSplitter:
    """Cuts a byte stream into (content, partial) lines: newline-ended ones are full, MAX_LINE pieces partial."""

    def __init__(self, strip_cr: bool = False):
        self._buffer = bytearray()
        self._strip_cr = strip_cr

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The complete lines and MAX_LINE pieces that data finishes."""
        self._buffer += data
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start, start + MAX_LINE + 1)
            if end >= 0:
                line = bytes(self._buffer[start:end])
                if self._strip_cr and line.endswith(b"\r"):
                    line = line[:-1]
                lines.append((line, False))
                start = end + 1
            elif len(self._buffer) - start > MAX_LINE:
                lines.append((bytes(self._buffer[start:start + MAX_LINE]), True))
                start += MAX_LINE
            else:
                break
        del self._buffer[:start]
        return lines

    def flush(self) -> list[tuple[bytes, bool]]:
        """At end of stream: what is left, as a full line (containerd's choice)."""
        if not self._buffer:
            return []
        line = bytes(self._buffer)
        self._buffer.clear()
        return [(line, False)]


class CriLogFile:
    """A container's log file; renamed to <path>.<UTC time> past max_size, keeping max_files files in all."""

    def __init__(self, path: Path, max_size: int = DEFAULT_MAX_SIZE, max_files: int = DEFAULT_MAX_FILES):
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._file = None
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the path for appending, e.g. after someone else renamed the file."""
        if self._file is not None:
            self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the container's lifetime

    def write(self, stream: str, lines: list[tuple[bytes, bool]], ns: int | None = None) -> None:
        """Append lines of one stream, all stamped with the same time, then rotate if the file grew too big."""
        if not lines or self._file is None:
            return
        stamp = time.time_ns() if ns is None else ns
        self._file.write(b"".join(format_line(stamp, stream, partial, content) for content, partial in lines))
        self._file.flush()
        if self._file.tell() >= self.max_size:
            self.rotate()

    def rotate(self) -> None:
        """Rename the current file aside, drop the oldest rotated ones, start a new file."""
        suffix = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.{suffix}")
        count = 0
        while target.exists():
            count += 1
            target = self.path.with_name(f"{self.path.name}.{suffix}.{count}")
        os.rename(self.path, target)
        rotated = self.rotated()
        for old in rotated[: max(0, len(rotated) - (self.max_files - 1))]:
            old.unlink(missing_ok=True)
        self.reopen()

    def rotated(self) -> list[Path]:
        """Rotated files of this log, oldest first."""
        prefix = f"{self.path.name}."
        return sorted((p for p in self.path.parent.iterdir() if p.name.startswith(prefix)),
                      key=lambda p: (p.stat().st_mtime_ns, p.name))

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


Listener = Callable[[str, bytes], None]
"""Called with (stream, chunk) for output, and (stream, b"") at the end of the stream."""


class Pump:
    """Copies one non-blocking file descriptor (a FIFO or a pty master) into a log file and to listeners."""

    def __init__(self, fd: int, stream: str, log: CriLogFile | None, listeners: list[Listener], tty: bool = False):
        self.fd = fd
        self.stream = stream
        self.log = log
        self.listeners = listeners
        self.splitter = LineSplitter(strip_cr=tty)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._finish(self.splitter.flush())
            return
        if self.log is not None:
            self.log.write(self.stream, self.splitter.feed(data))
        for listener in list(self.listeners):
            listener(self.stream, data)

    def _finish(self, rest: list[tuple[bytes, bool]]) -> None:
        if self.log is not None:
            self.log.write(self.stream, rest)
        self.stop()
        for listener in list(self.listeners):
            listener(self.stream, b"")
        if not self.done.done():
            self.done.set_result(None)

    def stop(self) -> None:
        """Stop copying and close the descriptor (the container's side stays open)."""
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
