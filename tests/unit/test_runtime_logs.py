"""CRI log lines, partial lines, rotation, and the pump that copies a FIFO into the log."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from kubelite.kubelet.runtime.logs import MAX_LINE, CriLogFile, LineSplitter, Pump, format_line, timestamp

LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$")


def test_timestamp_and_line_format() -> None:
    assert timestamp(1475713029_669794202) == b"2016-10-06T00:17:09.669794202Z"
    assert timestamp(1475713029_000000005) == b"2016-10-06T00:17:09.000000005Z"
    assert format_line(1475713029_669794202, "stdout", False, b"hello world") == \
        b"2016-10-06T00:17:09.669794202Z stdout F hello world\n"
    assert format_line(0, "stderr", True, b"") == b"1970-01-01T00:00:00.000000000Z stderr P \n"


def test_splitter_full_partial_and_flush() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [(b"one", False)]
    assert splitter.feed(b"o\n\nthree") == [(b"two", False), (b"", False)]
    assert splitter.flush() == [(b"three", False)]
    assert splitter.flush() == []
    long = b"x" * (MAX_LINE * 2 + 10)
    assert splitter.feed(long) == [(b"x" * MAX_LINE, True), (b"x" * MAX_LINE, True)]
    assert splitter.feed(b"\n") == [(b"x" * 10, False)]
    exact = b"y" * MAX_LINE + b"\n"
    assert splitter.feed(exact) == [(b"y" * MAX_LINE, False)]


def test_splitter_strips_terminal_carriage_returns() -> None:
    assert LineSplitter(strip_cr=True).feed(b"tty\r\n") == [(b"tty", False)]
    assert LineSplitter().feed(b"raw\r\n") == [(b"raw\r", False)]


def test_log_file_rotates_and_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "c" / "0.log"
    log = CriLogFile(path, max_size=1000, max_files=3)
    for i in range(100):
        log.write("stdout", [(b"line %03d " % i + b"." * 40, False)])
    log.close()
    rotated = sorted(p for p in path.parent.iterdir() if p != path)
    assert len(rotated) == 2, "max_files counts the current file"
    assert all(p.stat().st_size >= 1000 for p in rotated) and path.stat().st_size < 1000
    contents = b"".join(p.read_bytes() for p in [*sorted(rotated, key=lambda p: p.stat().st_mtime_ns), path])
    numbers = [int(LINE.match(raw).group(4).split()[1]) for raw in contents.splitlines()]
    assert numbers == list(range(numbers[0], 100)), "the newest lines survive, in order"


def test_log_file_reopen_after_external_rename(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    log = CriLogFile(path)
    log.write("stdout", [(b"before", False)])
    path.rename(tmp_path / "0.log.old")
    log.reopen()
    log.write("stderr", [(b"after", False)])
    log.close()
    assert LINE.match(path.read_bytes().strip()).group(4) == b"after"
    assert LINE.match((tmp_path / "0.log.old").read_bytes().strip()).group(4) == b"before"


async def test_pump_copies_fifo_until_writers_close(tmp_path: Path) -> None:
    fifo = tmp_path / "stdout"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    log = CriLogFile(tmp_path / "0.log")
    seen: list[bytes] = []
    pump = Pump(reader, "stdout", log, [lambda stream, chunk: seen.append(chunk)])
    os.write(writer, b"first\nsecond par")
    os.write(writer, b"t\nno newline")
    os.close(writer)
    await asyncio.wait_for(pump.done, 5)
    log.close()
    lines = [LINE.match(raw).groups()[1:] for raw in (tmp_path / "0.log").read_bytes().splitlines()]
    assert lines == [(b"stdout", b"F", b"first"), (b"stdout", b"F", b"second part"), (b"stdout", b"F", b"no newline")]
    assert b"".join(seen) == b"first\nsecond part\nno newline" and seen[-1] == b""
    assert pump.fd == -1
