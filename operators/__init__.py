"""The AI steps of a pipeline: classify, retrieve, generate, check.

Each factory returns a streamflow Operator (composable with
``reactivex.pipe`` or as a Stage) that reads its inputs from the event
payload, a dict or a pydantic model, writes its result back under a field
name of your choice, and records a trace line with the model it used. Each
step talks to its model through a small protocol
(:mod:`operators.models`), so the offline defaults and an HTTP model plug in
behind the same factory.
"""

from operators._payload import read_field, write_fields
from operators._pii import find_pii, luhn_valid, redact_pii
from operators.check import CheckResult, check, redact
from operators.classify import Classification, classify
from operators.generate import DraftAnswer, generate, read_passages
from operators.generate_loop import escalate_by_category, generate_until_checked, judge_answer
from operators.models import (
    AnswerComposer,
    AnswerTemplate,
    BM25Index,
    Classifier,
    ExtractiveComposer,
    Judge,
    LexicalGroundingJudge,
    LinearTextClassifier,
    Passage,
    Retriever,
)
from operators.retrieve import retrieve

__all__ = [
    "AnswerComposer",
    "AnswerTemplate",
    "BM25Index",
    "CheckResult",
    "Classification",
    "Classifier",
    "DraftAnswer",
    "ExtractiveComposer",
    "Judge",
    "LexicalGroundingJudge",
    "LinearTextClassifier",
    "Passage",
    "Retriever",
    "check",
    "classify",
    "escalate_by_category",
    "find_pii",
    "generate",
    "generate_until_checked",
    "judge_answer",
    "luhn_valid",
    "read_field",
    "read_passages",
    "redact",
    "redact_pii",
    "retrieve",
    "write_fields",
]
