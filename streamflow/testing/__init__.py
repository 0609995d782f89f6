"""Public test helpers: a local server that speaks the OpenAI wire format."""

from streamflow.testing.openai_server import (
    Fault,
    OpenAIServer,
    ServedRequest,
    count_tokens,
    hashed_embedding,
    open_openai_server,
    serve_openai_in_thread,
)

__all__ = [
    "Fault",
    "OpenAIServer",
    "ServedRequest",
    "count_tokens",
    "hashed_embedding",
    "open_openai_server",
    "serve_openai_in_thread",
]
