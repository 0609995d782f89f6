"""Answers and verdicts from a chat model: a streaming composer and an LLM judge."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from operators.models._llm_calls import CallPolicy, ask_json, call_model
from operators.models._results import Usage
from operators.models._types import ComposedAnswer, Passage, Verdict
from operators.models.openai import ModelClient

__all__ = [
    "ChatComposer",
    "JudgeAnswer",
    "JudgeOutcome",
    "JudgeVerdict",
    "LLMJudge",
    "parse_citations",
]

JudgeOutcome = Literal["pass", "review", "fail"]

_MARKER = re.compile(r"\[([A-Za-z][\w.-]*\d[\w.-]*)\]")
_ID_LIKE = re.compile(r"^[A-Za-z]+-\d+$")

DEFAULT_COMPOSER_INSTRUCTIONS = (
    "You answer customer support tickets. Use only the knowledge-base passages given, "
    "cite each passage you use by its id in square brackets, like [kb-101], and never "
    "promise what the passages do not say. Be brief and friendly."
)


def parse_citations(text: str, passages: Sequence[Passage]) -> list[str]:
    """The passage ids cited in ``text`` as ``[id]`` markers, in order of first mention.

    A marker matching a passage id (in any case) gives that id; a marker that
    looks like an id (``kb-999``) but matches none is kept as written, so the
    check step can flag a citation of something that was not retrieved.
    Placeholders such as ``[EMAIL]`` are not citations.

    Args:
        text: the answer.
        passages: the passages the answer was drawn from.

    Returns:
        The cited ids without duplicates.
    """
    known = {p.id.casefold(): p.id for p in passages}
    cited: list[str] = []
    for marker in _MARKER.findall(text):
        found = known.get(marker.casefold())
        if found is None and _ID_LIKE.match(marker):
            found = marker
        if found is not None and found not in cited:
            cited.append(found)
    return cited


def _passage_block(passages: Sequence[Passage]) -> str:
    if not passages:
        return "(no passages were found)"
    return "\n\n".join(f"[{p.id}] {p.title}\n{p.text}" for p in passages)


class ChatComposer:
    """Drafts an answer with a chat model, streamed, citing passages by id.

    The prompt holds the question, its category, the passages with their ids
    and, when an earlier draft failed a check, the check's reasons. The reply
    is streamed (``on_delta`` sees each piece as it arrives) and returned
    whole, with the ids it cites and the call's tokens and cost.
    """

    def __init__(
        self,
        client: ModelClient,
        model: str,
        *,
        instructions: str = DEFAULT_COMPOSER_INSTRUCTIONS,
        policy: CallPolicy | None = None,
        max_tokens: int = 300,
        temperature: float | None = 0.2,
        on_delta: Callable[[str], None] | None = None,
    ) -> None:
        """Create a composer.

        Args:
            client: the endpoint's client.
            model: the chat model name.
            instructions: the system prompt.
            policy: limiter, retries and token counting for each call.
            max_tokens: the cap on the answer's tokens.
            temperature: sampling temperature.
            on_delta: called with each streamed piece of text (a live view, say).
        """
        self._client = client
        client.check_price(model)
        self._model = model
        self._instructions = instructions
        self._policy = policy or CallPolicy()
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._on_delta = on_delta

    @property
    def name(self) -> str:
        """The model name written into traces."""
        return self._model

    def messages(
        self,
        question: str,
        *,
        category: str | None,
        passages: Sequence[Passage],
        feedback: str | None = None,
    ) -> list[dict[str, str]]:
        """The chat messages for one draft."""
        parts = []
        if category:
            parts.append(f"Category: {category}")
        parts.append(f"Ticket:\n{question}")
        parts.append(f"Knowledge-base passages:\n{_passage_block(passages)}")
        if feedback:
            parts.append(
                f"An earlier draft failed review for these reasons: {feedback}\n"
                "Write a new answer that avoids them."
            )
        return [
            {"role": "system", "content": self._instructions},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    async def compose(
        self,
        question: str,
        *,
        category: str | None,
        passages: Sequence[Passage],
        feedback: str | None = None,
    ) -> ComposedAnswer:
        """Stream an answer and return it whole, with its citations and usage.

        Raises:
            RateLimited, Unavailable, StepTimeout: retries were spent.
            StepFailed: the endpoint refused the request.
        """
        messages = self.messages(question, category=category, passages=passages, feedback=feedback)
        policy = self._policy

        async def stream() -> tuple[str, Usage]:
            async with self._client.chat_stream(
                messages,
                model=self._model,
                temperature=self._temperature,
                max_tokens=self._max_tokens,
                timeout=policy.timeout,
            ) as chunks:
                async for delta in chunks:
                    if self._on_delta is not None:
                        self._on_delta(delta)
                usage = chunks.usage or Usage(model=self._model)
                return chunks.content, usage

        text, usage = await call_model(
            stream,
            lambda r: r[1],
            policy=policy,
            estimate=policy.estimate(messages, self._max_tokens),
        )
        text = text.strip()
        return ComposedAnswer(
            text=text,
            citations=parse_citations(text, passages),
            model=self._model,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=usage.cost_usd,
        )


class JudgeAnswer(BaseModel):
    """The JSON an LLM judge must answer with."""

    outcome: JudgeOutcome
    reasons: list[str] = Field(default_factory=list)
    groundedness: float = Field(ge=0.0, le=1.0)


class JudgeVerdict(Verdict):
    """A Verdict that also carries the judge's own outcome (pass, review or fail)."""

    outcome: JudgeOutcome = "pass"


DEFAULT_JUDGE_INSTRUCTIONS = (
    "You review draft answers to customer support tickets before they are sent. "
    "Judge whether every claim in the answer is supported by the passages, whether it "
    "answers the ticket, and whether it is safe to send. Outcome 'pass' if it can go out, "
    "'review' if a person should look at it, 'fail' if it must be rewritten; give short "
    "reasons and the share of the answer the passages support (groundedness, 0 to 1)."
)


class LLMJudge:
    """Asks a chat model for ``{outcome, reasons, groundedness}`` as JSON.

    As a :class:`~operators.models.Judge` for ``check(judge=...)``, an outcome
    of ``fail`` reports groundedness 0 so the check fails the answer whatever
    its threshold; the full verdict, ``review`` included, is on the returned
    :class:`JudgeVerdict` (``judge_answer`` in :mod:`operators.generate_loop`
    applies it after the rule checks).
    """

    def __init__(
        self,
        client: ModelClient,
        model: str,
        *,
        instructions: str = DEFAULT_JUDGE_INSTRUCTIONS,
        policy: CallPolicy | None = None,
        max_tokens: int = 200,
        temperature: float | None = 0.0,
    ) -> None:
        """Create a judge.

        Args:
            client: the endpoint's client.
            model: the chat model name.
            instructions: the system prompt.
            policy: limiter, retries and token counting for each call.
            max_tokens: the cap on the verdict's tokens.
            temperature: sampling temperature.
        """
        self._client = client
        client.check_price(model)
        self._model = model
        self._instructions = instructions
        self._policy = policy or CallPolicy()
        self._max_tokens = max_tokens
        self._temperature = temperature

    @property
    def name(self) -> str:
        """The model name written into traces."""
        return self._model

    async def judge(
        self, answer: str, passages: Sequence[Passage], *, question: str | None = None
    ) -> JudgeVerdict:
        """Ask the model for its verdict on ``answer``.

        Raises:
            ModelOutputInvalid: the verdict is not the JSON asked for.
            RateLimited, Unavailable, StepTimeout: retries were spent.
        """
        user = (
            f"Ticket:\n{question or '(not given)'}\n\n"
            f"Passages:\n{_passage_block(passages)}\n\nDraft answer:\n{answer}"
        )
        verdict, usage = await ask_json(
            self._client,
            self._model,
            system=self._instructions,
            user=user,
            answer_model=JudgeAnswer,
            policy=self._policy,
            temperature=self._temperature,
            max_tokens=self._max_tokens,
        )
        reasons = [f"judge: {r}" for r in verdict.reasons]
        return JudgeVerdict(
            outcome=verdict.outcome,
            groundedness=0.0 if verdict.outcome == "fail" else verdict.groundedness,
            reasons=reasons or ([f"judge: {verdict.outcome}"] if verdict.outcome != "pass" else []),
            model=self._model,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            cost_usd=usage.cost_usd,
        )
