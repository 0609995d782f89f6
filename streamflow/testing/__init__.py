"""Public test helpers: marble tests in virtual time, and a local OpenAI-wire server.

The server needs Starlette and uvicorn (``pip install 'streamflow-ai[testing]'``);
its names load on first use, so the marble helpers work without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamflow.testing.marbles import (
    MarbleResult,
    events_from_marbles,
    parse_marbles,
    run_marbles,
)

if TYPE_CHECKING:
    from streamflow.testing.openai_server import (
        Fault,
        OpenAIServer,
        ServedRequest,
        count_tokens,
        hashed_embedding,
        open_openai_server,
        peak_in_window,
        serve_openai_in_thread,
    )

__all__ = [
    "Fault",
    "MarbleResult",
    "OpenAIServer",
    "ServedRequest",
    "count_tokens",
    "events_from_marbles",
    "hashed_embedding",
    "open_openai_server",
    "parse_marbles",
    "peak_in_window",
    "run_marbles",
    "serve_openai_in_thread",
]

_SERVER_NAMES = frozenset(
    {
        "Fault",
        "OpenAIServer",
        "ServedRequest",
        "count_tokens",
        "hashed_embedding",
        "open_openai_server",
        "peak_in_window",
        "serve_openai_in_thread",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from streamflow.testing import openai_server

        return getattr(openai_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
