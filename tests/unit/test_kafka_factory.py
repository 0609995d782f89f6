"""Every aiokafka client comes from the one factory, and nothing reaches into aiokafka internals."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "streamflow"
FACTORY = PACKAGE / "transports" / "kafka" / "_clients.py"
_CONSTRUCTION = re.compile(r"\bAIOKafka(?:Consumer|Producer|AdminClient)\(")
# aiokafka's private state: the consumer's client and group coordinator.
_PRIVATE = re.compile(
    r"\b(?:consumer|producer|admin)\._(?:client|coordinator|fetcher|subscription)\b"
)


def test_aiokafka_clients_are_built_only_by_the_factory() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path != FACTORY
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _CONSTRUCTION.search(line)
    ]
    assert offenders == []


def test_no_private_aiokafka_attributes_are_used() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _PRIVATE.search(line) or "getattr(consumer" in line
    ]
    assert offenders == []
