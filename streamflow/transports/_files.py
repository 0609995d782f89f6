"""JSONL file and stdio sources and sinks for the in-process runner."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

from streamflow.errors import ConfigError, EncodeError, StreamflowError
from streamflow.events import (
    DEFAULT_LIMITS,
    ErrorInfo,
    Event,
    RecordLimits,
    encode_bounded,
    encode_dead_letter,
    failing_step_attempts,
    make_dead_letter,
    ticket_of,
)
from streamflow.flow import CreditWindow, Ticket
from streamflow.transports._base import Emit, Record

__all__ = [
    "IterableSource",
    "JsonlFileSource",
    "JsonlSink",
    "OutputPaths",
    "ResultFile",
    "StdinSource",
    "WriteMode",
    "check_result_file",
    "plan_outputs",
    "side_paths",
]

# Yield to the loop every so many records even when credit is plentiful, so
# signals, progress and completions get their turn.
_YIELD_EVERY = 64


async def _emit_all(
    lines: Iterable[tuple[bytes, str]], emit: Emit, window: CreditWindow, stop: asyncio.Event
) -> int:
    count = 0
    is_set = stop.is_set
    for value, origin in lines:
        if is_set():
            break
        if window.size - window.in_use < 1:  # inlined: once per record
            await window.wait()
        elif count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if is_set():
            break
        window.take()
        emit(Record(value, origin), Ticket(window))
        count += 1
    return count


class JsonlFileSource:
    """Reads a JSONL file, one record per non-blank line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"input file {str(self.path)!r} does not exist; check --input")
        self.name = str(self.path)

    def count_lines(self) -> int:
        """Count non-blank lines (for a progress total)."""
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def _lines(self) -> Iterator[tuple[bytes, str]]:
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                stripped = line.strip()
                if stripped:
                    yield stripped, f"{self.path.name}:{number}"

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit every line against credit until EOF or ``stop``."""
        await _emit_all(self._lines(), emit, window, stop)


class IterableSource:
    """Emits records from an in-memory sequence of bytes (tests, benchmarks).

    Args:
        values: the records' bytes.
        name: the origin prefix (``name:1``, ``name:2``...).
        headers: headers every record carries (events re-entering a pipeline mark
            themselves with the event header).
    """

    def __init__(
        self,
        values: Iterable[bytes],
        *,
        name: str = "memory",
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        self.values = values
        self.name = name
        self.headers = tuple(headers)

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit every value against credit until exhausted or ``stop``."""
        lines = ((value, f"{self.name}:{i}") for i, value in enumerate(self.values, 1))
        if not self.headers:
            await _emit_all(lines, emit, window, stop)
            return
        headers = self.headers

        def emit_with_headers(record: Record, ticket: Ticket) -> None:
            record.headers = headers
            emit(record, ticket)

        await _emit_all(lines, emit_with_headers, window, stop)


class StdinSource:
    """Reads JSONL from standard input without blocking the event loop."""

    name = "stdin"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdin.buffer

    async def run(self, emit: Emit, window: CreditWindow, stop: asyncio.Event) -> None:
        """Emit lines from stdin against credit until EOF or ``stop``."""
        buffered = b""
        number = 0
        while not stop.is_set():
            chunk = await asyncio.to_thread(self._read_chunk)
            if not chunk:
                break
            buffered += chunk
            *complete, buffered = buffered.split(b"\n")
            lines = []
            for line in complete:
                number += 1
                if line.strip():
                    lines.append((line.strip(), f"stdin:{number}"))
            await _emit_all(lines, emit, window, stop)
        if buffered.strip() and not stop.is_set():
            await _emit_all([(buffered.strip(), f"stdin:{number + 1}")], emit, window, stop)

    def _read_chunk(self) -> bytes:
        read1 = getattr(self.stream, "read1", None)
        return read1(65536) if read1 is not None else self.stream.read(65536)


def side_paths(output: str | Path) -> tuple[Path, Path]:
    """Return the dead-letter and review file paths that sit beside ``output``.

    Args:
        output: the answers file (``-``: ``streamflow.jsonl`` in the working folder).

    Returns:
        ``(dead letters, review)``: ``<stem>.dlq.jsonl`` and ``<stem>.review.jsonl``.
    """
    out = Path("streamflow.jsonl") if str(output) == "-" else Path(output)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.dlq.jsonl"), out.with_name(f"{stem}.review.jsonl")


WriteMode = Literal["create", "overwrite", "append"]
"""What a run may do to result files that exist: nothing, replace them, or add to them."""


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes: answers (None: stdout), dead letters and parked events.

    Attributes:
        output: the answers file, or None for standard output.
        dlq: the dead-letter file.
        review: the file of events parked for review.
        filtered: the file of filtered events, when asked for.
    """

    output: Path | None
    dlq: Path
    review: Path
    filtered: Path | None = None

    def files(self) -> list[tuple[str, Path]]:
        """Return ``(option, path)`` for every file, the option that names it first."""
        found = [("--output", self.output)] if self.output is not None else []
        extra = [("--filtered", self.filtered)] if self.filtered is not None else []
        return [*found, ("--dlq", self.dlq), ("review file", self.review), *extra]


def plan_outputs(
    output: str,
    *,
    dlq: str | None = None,
    inputs: Iterable[str] = (),
    mode: WriteMode = "create",
    filtered: str | None = None,
) -> OutputPaths:
    """Check where a run will write before anything is read or created.

    With ``output`` ``-`` answers go to standard output and ``dlq`` is
    required (a file in the working folder would be a surprise); so it is
    for a device such as ``/dev/null``. The review file sits beside the dead
    letters then, else beside the output.

    Args:
        output: the answers file, or ``-``.
        dlq: the dead-letter file (default: beside the output).
        inputs: files the run reads; no result file may be one of them (same inode).
        mode: ``create`` refuses result files that exist, ``overwrite`` replaces them,
            ``append`` adds to them.
        filtered: the file for filtered events (default: none is written).

    Returns:
        The checked paths. Nothing is created.

    Raises:
        ConfigError: a result file is an input, is used twice, exists (mode ``create``),
            is a folder, or cannot be created; or ``-`` without ``dlq``.
    """
    if output == "-" or _special(Path(output)):
        # No folder to put the other files in: they sit beside the dead letters.
        if not dlq or dlq == "-":
            where = "stdout" if output == "-" else output
            raise ConfigError(
                f"--output {output} writes answers to {where}; name a file for dead letters "
                "with --dlq FILE"
            )
        dlq_path = Path(dlq)
        stem = dlq_path.name.removesuffix(".jsonl").removesuffix(".dlq")
        answers = None if output == "-" else Path(output)
        paths = OutputPaths(answers, dlq_path, dlq_path.with_name(f"{stem}.review.jsonl"))
    else:
        default_dlq, review = side_paths(output)
        paths = OutputPaths(Path(output), Path(dlq) if dlq else default_dlq, review)
    if filtered:
        paths = replace(paths, filtered=Path(filtered))
    sources = [Path(p) for p in inputs if p != "-" and Path(p).exists()]
    seen: list[tuple[str, Path]] = []
    for option, path in paths.files():
        for source in sources:
            if _same_file(path, source):
                raise ConfigError(
                    f"{option} {str(path)!r} is the input file; write the results somewhere else"
                )
        for other_option, other in seen:
            if _same_file(path, other):
                raise ConfigError(
                    f"{option} {str(path)!r} is also the {other_option} file; give each its own"
                )
        seen.append((option, path))
        _check_writable(option, path, mode)
    return paths


def check_result_file(path: str | Path, mode: WriteMode, *, option: str = "--output") -> Path:
    """Check that one result file can be written in ``mode`` before anything is read.

    For commands that write a single file (no dead letters or reviews beside it).

    Args:
        path: the file (not ``-``).
        mode: ``create`` refuses a file that exists, ``overwrite`` replaces it,
            ``append`` adds to it.
        option: the option that named the file, for the error message.

    Returns:
        The path. Nothing is created.

    Raises:
        ConfigError: the file exists (mode ``create``), is a folder, or cannot be written.
    """
    checked = Path(path)
    _check_writable(option, checked, mode)
    return checked


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def _special(path: Path) -> bool:
    """A device or pipe (``/dev/null``, a FIFO): written in place, never replaced."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _check_writable(option: str, path: Path, mode: WriteMode) -> None:
    """Refuse ``path`` unless the run can write it without destroying anything."""
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder; give a file path")
    if _special(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {str(path)!r} is not writable")
        return
    if path.exists():
        if mode == "create":
            raise ConfigError(
                f"{option} {str(path)!r} exists; pass --overwrite to replace the results "
                "or --append to add to them"
            )
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {str(path)!r} is not writable")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {str(path)!r}: cannot write in {str(folder)!r}")


class ResultFile:
    """One result file: appended to, written in place, or written aside and renamed.

    Renaming at the end means a reader never sees half a run, and a run that
    dies leaves the previous results untouched (the partial file stays aside).

    Args:
        path: the file.
        append: add to the file if it exists.
        atomic: write under a temporary name in the same folder and rename on
            :meth:`close` (ignored with ``append``).

    Raises:
        ConfigError: the folder or the file cannot be created.
    """

    def __init__(self, path: Path, *, append: bool, atomic: bool) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create folder for {path}: {exc.strerror}") from exc
        aside = atomic and not append and not _special(path)
        self._aside = path.with_name(f".{path.name}.{os.getpid()}.partial") if aside else None
        target = self._aside or path
        try:
            self.handle: BinaryIO = target.open("ab" if append else "wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc

    def discard(self) -> None:
        """Close without moving into place: a file written aside is removed."""
        self.handle.close()
        if self._aside is not None:
            self._aside.unlink(missing_ok=True)
            self._aside = None

    def close(self) -> None:
        """Flush, close and (when written aside) move into place."""
        self.handle.flush()
        if self._aside is not None:
            os.fsync(self.handle.fileno())
        self.handle.close()
        if self._aside is not None:
            os.replace(self._aside, self.path)
            self._aside = None


class JsonlSink:
    """Writes events as JSONL: answers to the output, dead letters and reviews beside it.

    A file write is durable enough for one process, so each ticket is
    released as soon as its line is written. An event that cannot be written
    (not serialisable, or above ``limits.max_record_bytes``) becomes a dead
    letter, and every dead letter is bounded the same way.

    Args:
        output: the answers file, or ``-`` for standard output.
        dlq: the dead-letter file (default: beside the output).
        review: the review file (default: beside the output).
        append: add to files that exist instead of replacing them.
        atomic: write each file under a temporary name in its folder and rename it
            into place on :meth:`aclose` (ignored with ``append``).
        filtered: a file for filtered events (default: they are only counted).
        limits: the size bounds of what is written.

    Raises:
        ConfigError: a folder or file cannot be created.
    """

    def __init__(
        self,
        output: str | Path,
        *,
        dlq: str | Path | None = None,
        review: str | Path | None = None,
        append: bool = False,
        atomic: bool = False,
        filtered: str | Path | None = None,
        limits: RecordLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        default_dlq, default_review = side_paths(output)
        self.output_path = None if str(output) == "-" else Path(output)
        self.dlq_path = Path(dlq) if dlq else default_dlq
        self.review_path = Path(review) if review else default_review
        opened: list[ResultFile] = []
        try:
            for path in (self.output_path, self.dlq_path, self.review_path):
                if path is not None:
                    opened.append(ResultFile(path, append=append, atomic=atomic))
        except ConfigError:
            for done in opened:
                done.discard()
            raise
        self.filtered_path = Path(filtered) if filtered else None
        self._filtered: BinaryIO | None = None
        if self.filtered_path is not None:
            try:
                filtered_file = ResultFile(self.filtered_path, append=append, atomic=atomic)
            except ConfigError:
                for done in opened:
                    done.discard()
                raise
            self._filtered = filtered_file.handle
        self._files = opened
        *_, dlq_file, review_file = opened
        if self._filtered is not None:
            self._files.append(filtered_file)
        self._out: BinaryIO = opened[0].handle if self.output_path else sys.stdout.buffer
        self._dlq = dlq_file.handle
        self._review = review_file.handle
        self.written = {"ok": 0, "review": 0, "dead_lettered": 0, "filtered": 0}
        self.unwritable: Counter[str] = Counter()

    def write(self, event: Event) -> None:
        """Write ``event`` to the file its outcome names and release its ticket.

        An ``ok`` or ``review`` event that cannot be written goes to the dead
        letters instead, counted in :attr:`unwritable` under the outcome it had.
        """
        outcome = event.outcome
        written = "filtered"
        if outcome in ("ok", "review"):
            try:
                value = encode_bounded(event, self.limits)
            except EncodeError as exc:
                info = ErrorInfo(type=type(exc).__name__, message=str(exc), step="encode")
                self._dead_letter(event, info)
                self.unwritable[outcome] += 1
                written = "dead_lettered"
            else:
                (self._out if outcome == "ok" else self._review).write(value + b"\n")
                written = outcome
        elif outcome == "failed":
            self._dead_letter(event)
            written = "dead_lettered"
        elif self._filtered is not None:
            try:
                self._filtered.write(encode_bounded(event, self.limits) + b"\n")
            except EncodeError as exc:
                info = ErrorInfo(type=type(exc).__name__, message=str(exc), step="encode")
                self._dead_letter(event, info)
                self.unwritable["filtered"] += 1
                written = "dead_lettered"
        self.written[written] += 1
        _release(event)

    def _dead_letter(
        self, event: Event, error: ErrorInfo | None = None, stage: str | None = None
    ) -> None:
        error = error or event.error or ErrorInfo(type="Unknown", message=event.reason or "failed")
        origin = event._origin if isinstance(event._origin, Record) else None
        letter = make_dead_letter(
            event_id=event.id,
            stage=stage or event._failed_in or error.step,
            error=error,
            attempts=failing_step_attempts(event),
            origin=origin.origin if origin is not None else None,
            event=event,
            limits=self.limits,
        )
        self._dlq.write(encode_dead_letter(letter, self.limits) + b"\n")

    def reject(self, record: Record, error: StreamflowError, ticket: Ticket) -> None:
        """Dead-letter an undecodable record with the reason and its bytes, then release it."""
        letter = make_dead_letter(
            event_id=error.event_id,
            stage="decode",
            error=ErrorInfo(type=type(error).__name__, message=str(error), step="decode"),
            original=record.value,
            origin=record.origin,
            limits=self.limits,
        )
        self._dlq.write(encode_dead_letter(letter, self.limits) + b"\n")
        self.written["dead_lettered"] += 1
        ticket.release()

    def abandon(self, event: Event) -> None:
        """Dead-letter an event that shutdown could not finish, so nothing is lost.

        An event that already failed (a stage's operator broke the run while it
        was inside) keeps its own error; any other is ``Interrupted``.
        """
        if event.outcome == "failed" and event.error is not None:
            self._dead_letter(event)
        else:
            info = ErrorInfo(
                type="Interrupted", message="shutdown before the event finished", step="shutdown"
            )
            self._dead_letter(event.model_copy(update={"outcome": "failed", "error": info}))
        self.written["dead_lettered"] += 1
        _release(event)

    async def flush(self) -> None:
        """Flush every result file."""
        for handle in (self._out, self._dlq, self._review, self._filtered):
            if handle is not None:
                handle.flush()

    async def aclose(self) -> None:
        """Flush and close the files (stdout stays open); files written aside move into place."""
        await self.flush()
        files, self._files = self._files, []
        for file in files:
            file.close()


def _release(event: Event) -> None:
    ticket = ticket_of(event)
    if ticket is not None:
        ticket.release()
