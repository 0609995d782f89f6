"""RecordLimits: the size and nesting every record must respect before any step sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamflow.errors import ConfigError

__all__ = ["MAX_ENCODABLE_DEPTH", "RecordLimits", "json_depth"]

MAX_ENCODABLE_DEPTH = 200
"""The deepest ``max_json_depth`` allowed: the encoder stops at 254 nested
containers, and a dead letter wraps the payload in two more (letter, event),
so a payload this deep still encodes with room to spare for a step's wrapping."""


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """Bounds on one record, checked before any step, so no record can wedge a stage.

    Attributes:
        max_record_bytes: the largest record read or written, in bytes. A larger
            input record is a dead letter; a larger finished event is a dead letter
            instead of a write the broker would refuse (Kafka's default message
            limit is 1 MiB, the default here).
        max_json_depth: the deepest nesting of objects and arrays an input record
            may have (a top-level object is depth 1).
        max_original_bytes: how much of a dead record's original bytes a dead letter
            keeps; past it the original is truncated and its size and SHA-256 are
            recorded, so every dead letter fits ``max_record_bytes`` (it is capped at a
            quarter of ``max_record_bytes``).

    Raises:
        ConfigError: a bound is not a positive integer, ``max_json_depth`` is above
            what can be encoded, or ``max_record_bytes`` is too small for a dead letter.
    """

    max_record_bytes: int = 1024 * 1024
    max_json_depth: int = 100
    max_original_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_record_bytes", "max_json_depth", "max_original_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_json_depth > MAX_ENCODABLE_DEPTH:
            raise ConfigError(
                f"max_json_depth must be at most {MAX_ENCODABLE_DEPTH} (deeper records cannot "
                f"be written back), got {self.max_json_depth}"
            )
        if self.max_record_bytes < 4096:
            raise ConfigError(
                f"max_record_bytes must be at least 4096 so a dead letter fits, "
                f"got {self.max_record_bytes}"
            )

    @property
    def original_bytes(self) -> int:
        """The original bytes a dead letter keeps: ``max_original_bytes``, capped so that
        the letter (base64 grows bytes by a third) stays well inside ``max_record_bytes``."""
        return min(self.max_original_bytes, self.max_record_bytes // 4)


def json_depth(value: Any, limit: int) -> int:
    """Return the nesting depth of a decoded JSON value, stopping once it passes ``limit``.

    Iterative, so a hostile depth cannot exhaust the interpreter's stack.

    Args:
        value: a decoded JSON value (dicts, lists, scalars).
        limit: stop walking once this depth is exceeded.

    Returns:
        The depth (0 for a scalar, 1 for a flat object or array), or ``limit + 1``
        as soon as the value is known to be deeper than ``limit``.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
