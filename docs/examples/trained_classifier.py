"""An offline classify step that loads a saved model; `streamflow train` writes the file.

streamflow train docs/examples/trained_classifier.py --stage classify --out tickets.model
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from operators import LinearTextClassifier, classify
from streamflow import Pipeline, Stage

# (text, label) pairs, or the path of a JSONL file of text/label lines.
EXAMPLES = [
    *[(f"I was charged twice for order {n}, please refund", "billing") for n in range(12)],
    *[(f"invoice {n} shows the wrong amount", "billing") for n in range(12)],
    *[(f"parcel {n} has not arrived yet", "shipping") for n in range(12)],
    *[(f"tracking number {n} says lost in transit", "shipping") for n in range(12)],
    *[(f"cannot log in, password reset {n} fails", "account_access") for n in range(12)],
    *[(f"my account {n} is locked after sign in", "account_access") for n in range(12)],
]

MODEL = Path(os.environ.get("TICKETS_MODEL", "out/tickets.model"))

pipeline = Pipeline(
    "trained",
    # Loads MODEL when the stage starts; without the file it trains on EXAMPLES there.
    [Stage("classify", classify(model=MODEL, examples=EXAMPLES, text_fields=["text"]))],
)


async def main() -> list[str]:
    """Train and save from code (what `streamflow train` does), then label two texts."""
    LinearTextClassifier.from_examples(EXAMPLES).save(MODEL)
    model = LinearTextClassifier.load(MODEL)
    labels = await model.classify(["the invoice amount is wrong", "parcel not arrived"])
    return [label.label for label in labels]


if __name__ == "__main__":
    print(asyncio.run(main()))
