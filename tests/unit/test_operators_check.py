"""check: PII redaction (Luhn-checked cards), groundedness, length and banned rules, fate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import reactivex
from pydantic import BaseModel, ConfigDict

from operators import (
    CheckResult,
    DraftAnswer,
    Passage,
    check,
    find_pii,
    luhn_valid,
    redact,
    redact_pii,
)
from streamflow.errors import ConfigError
from streamflow.events import Event
from streamflow.ops import Operator

PASSAGE = Passage(
    id="kb-201",
    title="Resetting your password",
    text="Click Forgot password on the sign-in page. The reset link is valid for 60 minutes. "
    "If the email does not arrive, check your spam folder.",
    score=8.0,
)
GROUNDED = (
    "Hi, thanks for getting in touch.\n\nClick Forgot password on the sign-in page. [kb-201] "
    "If the email does not arrive, check your spam folder. [kb-201]\n\nReply if it persists."
)
UNGROUNDED = (
    "Our warehouse in Lisbon ships replacement tablets overnight. Premium customers receive "
    "a complimentary upgrade to the enterprise tier every spring. [kb-201]"
)
VISA_VALID = "4111 1111 1111 1111"
VISA_INVALID = "4111 1111 1111 1112"


class Case(BaseModel):
    model_config = ConfigDict(extra="allow")

    body: str
    passages: list[Passage] = []
    answer: DraftAnswer | None = None
    check: CheckResult | None = None


async def run(op: Operator, payloads: Sequence[Any]) -> list[Event]:
    """Push payloads through ``op`` inside the running loop; return its events in input order."""
    events = [Event(id=f"e{i}", key=f"k{i}", payload=p) for i, p in enumerate(payloads)]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    out: list[Event] = []
    op(reactivex.from_iterable(events)).subscribe(
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    await done
    return sorted(out, key=lambda e: int(e.id[1:]))


def case(text: str, citations: Sequence[str] = ("kb-201",), body: str = "help") -> dict[str, Any]:
    return {
        "body": body,
        "passages": [PASSAGE.model_dump()],
        "answer": {"text": text, "citations": list(citations), "model": "test"},
    }


# -- personal data -------------------------------------------------------------


def test_luhn_accepts_card_numbers_and_rejects_a_changed_digit() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("5500005555555559")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+help@example.co.uk today", "mail me at [EMAIL] today"),
        ("call +1 (415) 555-0132 after 5", "call [PHONE] after 5"),
        ("or +44 20 7946 0958", "or [PHONE]"),
        (f"card {VISA_VALID} was charged", "card [CARD] was charged"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("amex 378282246310005", "amex [CARD]"),
    ],
)
def test_personal_data_is_redacted(text: str, expected: str) -> None:
    assert redact_pii(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        f"reference {VISA_INVALID} from the bank",
        "reference 4111111111111112",
        "invoice INV-2024-55123 for $49.99 on 2024-03-01",
        "order HW-123456 shipped in 3 to 5 days",
    ],
)
def test_numbers_that_are_not_personal_data_are_left_alone(text: str) -> None:
    assert find_pii(text) == []
    assert redact_pii(text)[0] == text


def test_redaction_counts_each_kind() -> None:
    text = f"a@b.io, c@d.io, 415-555-0132 and {VISA_VALID}"

    redacted, counts = redact_pii(text)

    assert redacted == "[EMAIL], [EMAIL], [PHONE] and [CARD]"
    assert dict(counts) == {"email": 2, "phone": 1, "card": 1}


async def test_redact_step_cleans_fields_and_says_what_it_found() -> None:
    body = f"I'm jo@example.com, card {VISA_VALID}, ref {VISA_INVALID}"

    [event] = await run(redact(fields=["subject", "body"]), [{"subject": "hi", "body": body}])

    assert event.payload["body"] == f"I'm [EMAIL], card [CARD], ref {VISA_INVALID}"
    assert event.trace[-1].detail == "card=1 email=1"
    assert event.outcome == "ok"


# -- answers -------------------------------------------------------------------


async def test_grounded_answer_passes_and_stays_ok() -> None:
    [event] = await run(check(), [case(GROUNDED)])

    result = event.payload["check"]
    assert event.outcome == "ok"
    assert result["outcome"] == "pass"
    assert result["reasons"] == []
    assert result["groundedness"] >= 0.5
    assert event.trace[-1].model == "lexical-grounding"


async def test_ungrounded_answer_goes_to_review_with_reasons() -> None:
    [event] = await run(check(), [case(UNGROUNDED)])

    result = event.payload["check"]
    assert result["outcome"] == "fail"
    assert result["groundedness"] < 0.5
    assert event.outcome == "review"
    assert event.reason is not None
    assert "not grounded in the passages" in event.reason
    assert "sentences not supported" in event.reason


async def test_failed_answer_can_go_to_the_dead_letters() -> None:
    [event] = await run(check(on_fail="dead_letter"), [case(UNGROUNDED)])

    assert event.outcome == "failed"
    assert event.error is not None
    assert event.error.type == "StepFailed"
    assert event.error.step == "check"
    assert "not grounded" in event.error.message
    assert event.payload["check"]["outcome"] == "fail", "the verdict travels with the event"
    assert event.trace[-1].outcome == "failed"


async def test_answer_is_stored_redacted_and_sent_to_review() -> None:
    leaky = GROUNDED + f" We will call you on 415-555-0132 about card {VISA_VALID}."

    [event] = await run(check(min_groundedness=0.0), [case(leaky)])

    text = event.payload["answer"]["text"]
    assert "415-555-0132" not in text
    assert VISA_VALID not in text
    assert "[PHONE]" in text
    assert "[CARD]" in text
    assert event.payload["check"]["redactions"] == {"phone": 1, "card": 1}
    assert event.outcome == "review"
    assert "personal data (1 card, 1 phone)" in (event.reason or "")


async def test_invalid_luhn_number_in_answer_is_untouched() -> None:
    text = GROUNDED + f" Your reference is {VISA_INVALID}."

    [event] = await run(check(min_groundedness=0.0), [case(text)])

    assert VISA_INVALID in event.payload["answer"]["text"]
    assert event.payload["check"]["redactions"] == {}


@pytest.mark.parametrize(
    ("options", "answer", "citations", "reason"),
    [
        ({"min_chars": 400}, GROUNDED, ["kb-201"], "answer too short"),
        ({"max_chars": 50}, GROUNDED, ["kb-201"], "answer too long"),
        ({"banned": ["spam folder"]}, GROUNDED, ["kb-201"], "banned content: 'spam folder'"),
        ({}, GROUNDED, ["kb-999"], "cites passages that were not retrieved: kb-999"),
        ({}, GROUNDED, [], "answer cites no passage"),
    ],
)
async def test_rules_send_answer_to_review_with_the_reason(
    options: dict[str, Any], answer: str, citations: list[str], reason: str
) -> None:
    [event] = await run(check(**options), [case(answer, citations)])

    assert event.outcome == "review"
    assert reason in event.payload["check"]["reasons"][0]
    assert reason in (event.reason or "")


async def test_event_without_answer_fails_the_check() -> None:
    [event] = await run(check(on_fail="dead_letter"), [{"body": "x", "passages": []}])

    assert event.outcome == "failed"
    assert event.payload["check"]["reasons"] == ["no answer to check"]


async def test_check_on_a_model_payload_keeps_the_model() -> None:
    payload = Case(
        body=f"my card is {VISA_VALID}",
        passages=[PASSAGE],
        answer=DraftAnswer(
            text=GROUNDED + " Mail jo@example.com.", citations=["kb-201"], model="m"
        ),
    )

    [event] = await run(check(redact_fields=["body"], min_groundedness=0.0), [payload])

    assert isinstance(event.payload, Case)
    assert event.payload.body == "my card is [CARD]"
    assert event.payload.answer is not None
    assert event.payload.answer.text.endswith("Mail [EMAIL].")
    assert event.payload.check is not None
    assert event.payload.check.redactions == {"card": 1, "email": 1}
    assert payload.body.endswith(VISA_VALID), "the input payload must not be mutated"


def test_check_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        check(min_groundedness=1.5)
    with pytest.raises(ConfigError):
        check(on_fail="drop")  # type: ignore[arg-type]
