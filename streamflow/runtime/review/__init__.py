"""Human review: list the events parked for a person, approve them, or send them back.

An event parked with outcome ``review`` waits in the review file
(``<stem>.review.jsonl``) or topic (``{pipeline}.review``). A person decides:

- **approve**: the event goes on as it is (outcome ``ok``). Parked by the last
  stage, it goes straight to the output; parked earlier (a classifier unsure of
  a label), it continues with the stage after the one that parked it.
- **reject**: the note becomes feedback in the payload and the event runs again
  from the rework stage. Both come from the pipeline's :class:`ReviewPolicy`
  (``Pipeline(review=...)``); by default the stage that parked the event runs
  again, with the note at ``payload["feedback"]``.

Each decision appends a ``review`` record to the event's trace and one line to
the decisions log (``<stem>.decisions.jsonl`` or ``{pipeline}.review.decisions``).
A decision is keyed by the event id and the time the event was parked, so an
event parked again — after a rework, or by a later run onto the same files —
is listed and can be decided again; the same parking cannot.
"""

from streamflow.runtime.review._decisions import (
    REVIEW_STEP,
    Decision,
    approve_target,
    approved,
    decisions_path,
    decisions_topic,
    parked_at,
    parked_stage,
    reject_target,
    rejected,
    review_round,
)
from streamflow.runtime.review._files import FileReviewQueue, ReviewResult
from streamflow.runtime.review._kafka import KafkaReviewQueue
from streamflow.runtime.review._policy import ReviewPolicy

__all__ = [
    "REVIEW_STEP",
    "Decision",
    "FileReviewQueue",
    "KafkaReviewQueue",
    "ReviewPolicy",
    "ReviewResult",
    "approve_target",
    "approved",
    "decisions_path",
    "decisions_topic",
    "parked_at",
    "parked_stage",
    "reject_target",
    "rejected",
    "review_round",
]
