"""Public test helpers: marble tests in virtual time, and a local OpenAI-wire server."""

from streamflow.testing.marbles import (
    MarbleResult,
    events_from_marbles,
    parse_marbles,
    run_marbles,
)
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
