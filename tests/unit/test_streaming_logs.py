"""Reading CRI logs: line parsing, partial lines, timestamps, tail, since, limitBytes, rotation and follow."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kubelite.kubelet.streaming.logs import (
    LineAssembler,
    LineFilter,
    LogLine,
    LogOptions,
    LogReader,
    parse_line,
    parse_timestamp,
    rotated_files,
    tail_lines,
)

T0 = "2016-10-06T00:17:09.669794202Z"
T1 = "2016-10-06T00:17:10.000000001Z"
T2 = "2016-10-06T00:17:11.5Z"
LOG = (f"{T0} stdout F first\n"
       f"{T0} stderr P err-a\n"
       f"{T1} stdout P par\n"
       f"{T1} stdout F tial\n"
       f"{T1} stderr F err-b\n"
       f"{T2} stdout F line\n").encode()


def write(path: Path, data: bytes, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


async def read(path: Path, **options: object) -> bytes:
    return b"".join([chunk async for chunk in LogReader(path, LogOptions(**options)).chunks()])  # type: ignore[arg-type]


def test_timestamps_parse_with_any_precision_and_zone() -> None:
    assert parse_timestamp(T0.encode()) == 1475713029_669794202
    assert parse_timestamp(b"2016-10-06T00:17:09Z") == 1475713029_000000000
    assert parse_timestamp(b"2016-10-06T00:17:09.5Z") == 1475713029_500000000
    assert parse_timestamp(b"2016-10-06T02:17:09.000000001+02:00") == 1475713029_000000001
    assert parse_timestamp(b"2016-10-05T23:17:09-01:00") == 1475713029_000000000
    for bad in (b"yesterday", b"2016-10-06 00:17:09Z", b"2016-10-06T00:17:09.1234567890Z", b"2016-10-06T00:17:09"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_line_parsing() -> None:
    parsed = parse_line(f"{T0} stdout F hello world".encode())
    assert parsed is not None and (parsed.stream, parsed.partial, parsed.content) == (b"stdout", False, b"hello world")
    parsed = parse_line(f"{T0} stderr P:future-tag  two spaces".encode())
    assert parsed is not None and (parsed.partial, parsed.content) == (True, b" two spaces")
    parsed = parse_line(f"{T0} stdout F".encode())
    assert parsed is not None and parsed.content == b""
    assert parse_line(f"{T0} stdin F nope".encode()) is None
    assert parse_line(b"garbage") is None


def test_partial_pieces_join_per_stream_across_chunk_boundaries() -> None:
    assembler = LineAssembler()
    lines = [line for i in range(0, len(LOG), 7) for line in assembler.feed(LOG[i:i + 7])]
    assert [(line.stream, line.content) for line in lines] == [
        (b"stdout", b"first\n"), (b"stdout", b"partial\n"), (b"stderr", b"err-aerr-b\n"), (b"stdout", b"line\n")]
    assert lines[1].timestamp == T1.encode() and lines[2].timestamp == T0.encode()
    assert assembler.finish() == []


def test_unfinished_lines_are_kept_until_the_end() -> None:
    assembler = LineAssembler()
    assert assembler.feed(f"{T0} stdout P abc\n{T0} stdout F de".encode()) == []
    assert [line.content for line in assembler.feed(b"f\n")] == [b"abcdef\n"]
    assert assembler.feed(f"{T1} stdout P dangling\n".encode()) == []
    assert [line.content for line in assembler.finish()] == [b"dangling\n"]


def test_timestamps_since_and_limit() -> None:
    lines = LineAssembler().feed(LOG)
    assert LineFilter(LogOptions(timestamps=True)).render(lines[:1]) == (
        b"2016-10-06T00:17:09.669794202Z first\n")
    assert lines[3].render(True) == b"2016-10-06T00:17:11.500000000Z line\n", "always nine fraction digits"
    since = LineFilter(LogOptions(since_ns=parse_timestamp(T1.encode())))
    assert since.render(lines) == b"partial\nline\n"
    offset = [LogLine(b"2016-10-06T02:17:12+02:00", b"stdout", b"late\n")]
    assert since.render(offset) == b"late\n"
    limited = LineFilter(LogOptions(limit_bytes=8))
    assert limited.render(lines) == b"first\npa" and limited.exhausted
    assert limited.render(lines) == b""


def test_tail_counts_whole_lines_and_reads_older_files_only_when_needed(tmp_path: Path) -> None:
    older = [write(tmp_path / "0.log.20240101-000000", f"{T0} stdout F one\n{T0} stdout P tw\n".encode(), 1000),
             write(tmp_path / "0.log.20240101-000001", f"{T0} stdout F o\n".encode(), 2000)]
    current = f"{T1} stdout F three\n{T1} stdout F four\n".encode()
    assert [line.content for line in tail_lines(current, older, 2)[0]] == [b"three\n", b"four\n"]
    assert [line.content for line in tail_lines(current, older, 3)[0]] == [b"two\n", b"three\n", b"four\n"]
    assert [line.content for line in tail_lines(current, older, 10)[0]] == [
        b"one\n", b"two\n", b"three\n", b"four\n"]
    assert tail_lines(current, older, 0)[0] == []


def test_rotated_files_are_ordered_by_age(tmp_path: Path) -> None:
    write(tmp_path / "0.log", b"")
    newer = write(tmp_path / "0.log.20240101-000000", b"", 2000)
    older = write(tmp_path / "0.log.20240101-000000.1", b"", 1000)
    write(tmp_path / "0.log.20230101-000000.gz", b"", 500)
    write(tmp_path / "1.log.20230101-000000", b"", 500)
    assert rotated_files(tmp_path / "0.log") == [older, newer]
    assert rotated_files(tmp_path / "missing" / "0.log") == []


async def test_reader_reads_rotated_files_then_the_current_one(tmp_path: Path) -> None:
    write(tmp_path / "0.log.20240101-000000", f"{T0} stdout F old\n{T0} stdout P spl\n".encode(), 1000)
    write(tmp_path / "0.log.20240101-000001", f"{T0} stdout F it\n{T0} stdout F cut sh".encode(), 2000)
    current = write(tmp_path / "0.log", f"{T1} stdout F new\n{T2} stdout F unterminated".encode())
    assert await read(current) == b"old\nsplit\ncut sh\nnew\nunterminated\n", "a file's end ends its last line"
    assert await read(current, tail_lines=2) == b"new\nunterminated\n"
    assert await read(current, limit_bytes=6) == b"old\nsp"
    assert await read(current, tail_lines=3) == b"cut sh\nnew\nunterminated\n"
    assert await read(current, since_ns=parse_timestamp(T2.encode())) == b"unterminated\n"
    assert await read(tmp_path / "none.log") == b""


async def test_follow_streams_new_lines_across_rotation_until_stopped(tmp_path: Path) -> None:
    path = write(tmp_path / "0.log", f"{T0} stdout F before\n".encode())
    running = asyncio.Event()
    running.set()

    async def is_running() -> bool:
        return running.is_set()

    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def follow() -> None:
        async for chunk in LogReader(path, LogOptions(follow=True, tail_lines=1), is_running).chunks():
            received.put_nowait(chunk)

    task = asyncio.create_task(follow())
    async with asyncio.timeout(5):
        assert await received.get() == b"before\n"
        with path.open("ab") as log:
            log.write(f"{T1} stdout F grow".encode())
            log.flush()
            await asyncio.sleep(0.3)
            assert received.empty(), "half a line is not output"
            log.write(b"ing\n")
        assert await received.get() == b"growing\n"
        os.rename(path, path.with_name("0.log.20240101-000000"))
        with path.open("ab") as log:
            log.write(f"{T2} stdout F rotated\n".encode())
        assert await received.get() == b"rotated\n"
        running.clear()
        with path.open("ab") as log:
            log.write(f"{T2} stdout F last words\n".encode())
        await task
    assert await received.get() == b"last words\n" and received.empty()
