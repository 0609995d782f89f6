"""Marble diagrams for testing event operators in (virtual) time.

A marble string draws a stream on a time line, one character per tick::

    "-a-b--(cd)|"

    -      one tick passes with nothing emitted
    a      an event with id "a" (any character other than - | # ( ) , and space)
    (cd)   events c and d at the same instant; the whole group is one tick
    |      the stream completes
    #      the stream fails
    space  ignored, for aligning diagrams

Unlike RxPY, where a group takes as many ticks as it has characters, a group
here is one tick wide; so every diagram, output ones included, reads as "the
n-th token happens at tick n" and an output can always be drawn exactly.

The operators run on asyncio tasks, so these helpers schedule on the running
event loop. Run them under a fake-time loop (the ``looptime`` pytest plugin:
``@pytest.mark.looptime``) and ``await asyncio.sleep(5)`` in a step takes no
real time while the loop clock moves by 5 seconds, so timings can be asserted
exactly::

    @pytest.mark.looptime
    async def test_slow_step_delays_its_event() -> None:
        async def slow(event: Event) -> Event:
            await asyncio.sleep(2)
            return event

        result = await run_marbles(map_async(slow, concurrency=2), "-a-b|")
        assert result.marbles == "---a-(b|)"
        assert result.pairs == [(3.0, "a"), (5.0, "b")]
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from streamflow.events import Event

__all__ = ["MarbleResult", "events_from_marbles", "parse_marbles", "run_marbles"]

_COMPLETE = "|"
_ERROR = "#"


def parse_marbles(marbles: str) -> list[tuple[int, str]]:
    """Parse a marble string into ``(tick, symbol)`` pairs in emission order.

    Args:
        marbles: the diagram, e.g. ``"-a-b--c|"``.

    Returns:
        One pair per event id, ``"|"`` or ``"#"``, with the tick it happens at.

    Raises:
        ValueError: an unclosed or nested group, a comma outside a group, or
            anything drawn after ``|`` or ``#``.
    """
    text = marbles.replace(" ", "")
    parsed: list[tuple[int, str]] = []
    frame = 0
    i = 0
    ended = False

    def add(tick: int, symbol: str) -> None:
        nonlocal ended
        if ended:
            raise ValueError(f"marbles {marbles!r}: nothing may follow '|' or '#'")
        parsed.append((tick, symbol))
        ended = symbol in (_COMPLETE, _ERROR)

    while i < len(text):
        char = text[i]
        if char == "-":
            frame += 1
            i += 1
        elif char == "(":
            close = text.find(")", i)
            if close < 0 or "(" in text[i + 1 : close]:
                raise ValueError(f"marbles {marbles!r}: group opened at {i} is not closed")
            for symbol in text[i + 1 : close]:
                if symbol != ",":
                    add(frame, symbol)
            frame += 1
            i = close + 1
        elif char in "),":
            raise ValueError(f"marbles {marbles!r}: unexpected {char!r} at {i}")
        else:
            add(frame, char)
            frame += 1
            i += 1
    return parsed


def events_from_marbles(
    marbles: str,
    *,
    tick: float = 1.0,
    values: Mapping[str, Any] | None = None,
    error: Exception | None = None,
) -> Observable[Event]:
    """Build a cold Observable that emits events at the times a marble string shows.

    Each subscription schedules its emissions on the running asyncio loop,
    counting time from the moment of subscription.

    Args:
        marbles: the diagram, e.g. ``"-a-b--c|"``.
        tick: seconds per character.
        values: per character, an :class:`Event` to emit (a copy of it each
            time), or a payload to wrap as ``Event(id=char, payload=value)``.
            Characters not in ``values`` become ``Event(id=char, payload=char)``.
        error: the exception ``#`` raises (default ``Exception("error")``).

    Returns:
        An Observable of events.

    Raises:
        ValueError: when the diagram does not parse (see :func:`parse_marbles`).
    """
    if tick <= 0:
        raise ValueError(f"tick must be > 0 seconds, got {tick}")
    parsed = parse_marbles(marbles)
    lookup = dict(values or {})
    failure = error if error is not None else Exception("error")

    def make(symbol: str) -> Event:
        value = lookup.get(symbol, symbol)
        if isinstance(value, Event):
            return value.model_copy()
        return Event(id=symbol, payload=value)

    # One callback per instant: the loop's timer heap does not promise FIFO for
    # equal deadlines, and a group must come out in the order it is drawn.
    instants: dict[int, list[str]] = {}
    for frame, symbol in parsed:
        instants.setdefault(frame, []).append(symbol)

    def subscribe(
        observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = asyncio.get_running_loop()

        def fire(symbols: list[str]) -> Callable[[], None]:
            def emit() -> None:
                for symbol in symbols:
                    if symbol == _COMPLETE:
                        observer.on_completed()
                    elif symbol == _ERROR:
                        observer.on_error(failure)
                    else:
                        observer.on_next(make(symbol))

            return emit

        handles = [
            loop.call_later(frame * tick, fire(symbols)) for frame, symbols in instants.items()
        ]

        def cancel() -> None:
            for handle in handles:
                handle.cancel()

        return Disposable(cancel)

    return reactivex.create(subscribe)


@dataclass
class MarbleResult:
    """What an operator emitted during :func:`run_marbles`.

    Attributes:
        events: the emitted events, in emission order.
        times: seconds since subscription at which each event came out.
        tick: the seconds per character used to draw :attr:`marbles`.
        completed_at: seconds since subscription of ``on_completed``, if it came.
        error: the exception of ``on_error``, if it came.
        error_at: seconds since subscription of ``on_error``, if it came.
    """

    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    tick: float = 1.0
    completed_at: float | None = None
    error: Exception | None = None
    error_at: float | None = None

    @property
    def ids(self) -> list[str]:
        """The ids of the emitted events, in emission order."""
        return [event.id for event in self.events]

    @property
    def pairs(self) -> list[tuple[float, str]]:
        """``(seconds since subscription, event id)`` per emitted event."""
        return list(zip(self.times, self.ids, strict=True))

    @property
    def marbles(self) -> str:
        """The output drawn as a marble string (best read with one-character ids).

        An emission between two ticks is drawn at the tick before it;
        :attr:`pairs` has the exact times.
        """
        marks: list[tuple[int, str]] = [
            (self._frame(t), e.id) for t, e in zip(self.times, self.events, strict=True)
        ]
        if self.completed_at is not None:
            marks.append((self._frame(self.completed_at), _COMPLETE))
        if self.error_at is not None:
            marks.append((self._frame(self.error_at), _ERROR))
        out: list[str] = []
        cursor = 0
        i = 0
        while i < len(marks):
            frame = marks[i][0]
            symbols = []
            while i < len(marks) and marks[i][0] == frame:
                symbols.append(marks[i][1])
                i += 1
            out.append("-" * (frame - cursor))
            out.append(symbols[0] if len(symbols) == 1 else f"({''.join(symbols)})")
            cursor = frame + 1
        return "".join(out)

    def _frame(self, seconds: float) -> int:
        # The epsilon absorbs float error in the loop clock (e.g. 0.1 * 3).
        return math.floor(seconds / self.tick + 1e-6)


async def run_marbles(
    operator: Callable[[Observable[Event]], Observable[Event]],
    marbles: str,
    *,
    tick: float = 1.0,
    values: Mapping[str, Any] | None = None,
    error: Exception | None = None,
    timeout: float = 600.0,
) -> MarbleResult:
    """Feed a marble diagram through ``operator`` and record what comes out, and when.

    Call it inside a running loop; under ``looptime`` the whole run takes no
    real time.

    Args:
        operator: any ``Observable[Event] -> Observable[Event]`` function,
            streamflow operators and ``reactivex.pipe(...)`` chains included.
        marbles: the input diagram (see :func:`events_from_marbles`).
        tick: seconds per character, for the input and the drawn output.
        values: per character, the Event or payload to emit.
        error: the exception the input's ``#`` raises.
        timeout: loop seconds to wait for the output to complete or fail.

    Returns:
        A :class:`MarbleResult` with the events, their times and the drawing.

    Raises:
        TimeoutError: the output neither completed nor failed within ``timeout``;
            the message shows what had come out by then.
    """
    loop = asyncio.get_running_loop()
    source = events_from_marbles(marbles, tick=tick, values=values, error=error)
    result = MarbleResult(tick=tick)
    finished: asyncio.Future[None] = loop.create_future()
    start = loop.time()

    def on_next(event: Event) -> None:
        result.events.append(event)
        result.times.append(loop.time() - start)

    def on_error(exc: Exception) -> None:
        if not finished.done():
            result.error, result.error_at = exc, loop.time() - start
            finished.set_result(None)

    def on_completed() -> None:
        if not finished.done():
            result.completed_at = loop.time() - start
            finished.set_result(None)

    subscription = operator(source).subscribe(on_next, on_error, on_completed)
    try:
        async with asyncio.timeout(timeout):
            await finished
    except TimeoutError:
        raise TimeoutError(
            f"the output did not complete within {timeout:g}s; "
            f"emitted so far: {result.marbles!r} {result.pairs}"
        ) from None
    finally:
        subscription.dispose()
    return result
