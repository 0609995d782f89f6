"""retrieve: find the knowledge-base passages that answer each event's question."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from operators._payload import payload_text, read_field, write_fields
from operators._step import step_record
from operators.models._bm25 import BM25Index
from operators.models._ledger import traced_calls
from operators.models._types import Article, Passage, Retriever
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator, RetryPolicy, map_async

__all__ = ["Passage", "retrieve"]

DEFAULT_QUERY_FIELDS = ("subject", "body", "text", "question")


def retrieve(
    index: Retriever | None = None,
    *,
    articles: Iterable[Article] | str | Path | None = None,
    k: int = 3,
    query_fields: Sequence[str] = DEFAULT_QUERY_FIELDS,
    category_field: str | None = "classification.label",
    field: str = "passages",
    concurrency: int = 64,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    into: type[BaseModel] | None = None,
    name: str = "retrieve",
) -> Operator:
    """Write the top ``k`` :class:`Passage` objects for each event's question into its payload.

    ::

        in:   --q1--q2--|
        out:  --p1--p2--|     p = [Passage(id, title, text, score), ...] best first

    The category at ``category_field`` (the classifier's label) is handed to
    the retriever, which boosts or keeps only that category's articles. An
    event with no matching passage goes on with an empty list; the check step
    then finds its answer ungrounded.

    Args:
        index: the retriever backend; None builds a BM25Index over ``articles``.
        articles: Article objects or a JSONL path, used when ``index`` is None.
        k: most passages per event.
        query_fields: payload fields whose text is the query.
        category_field: dotted payload path of the category, or None to ignore it.
        field: payload field the passages are written to.
        concurrency: events in flight at once.
        timeout: seconds per event.
        retry: retry policy for a failing retriever.
        into: a payload model to turn the payload into, or None to keep its type.
        name: the step name in traces.

    Returns:
        An Operator for ``reactivex.pipe`` or a Stage.

    Raises:
        ConfigError: with neither index nor articles, or k < 1.
    """
    if index is None:
        if articles is None:
            raise ConfigError("retrieve: pass index=... or articles=... (a JSONL path or list)")
        index = (
            BM25Index.from_jsonl(articles)
            if isinstance(articles, str | Path)
            else BM25Index(articles)
        )
    if k < 1:
        raise ConfigError(f"retrieve: k must be >= 1, got {k}")
    backend = index

    async def retrieve_passages(event: Event) -> Event:
        query = payload_text(event.payload, query_fields)
        category = read_field(event.payload, category_field) if category_field else None
        found = await backend.retrieve(
            query, k=k, category=str(category) if category is not None else None
        )
        passages = list(found.passages)
        record = step_record(
            name,
            model=backend.name,
            tokens_in=found.tokens_in,
            cost_usd=found.cost_usd,
            detail=",".join(p.id for p in passages) or "no passages",
        )
        return event.traced(record, payload=write_fields(event.payload, {field: passages}, into))

    return map_async(
        traced_calls(retrieve_passages, name),
        concurrency=concurrency,
        timeout=timeout,
        retry=retry,
        name=name,
    )
