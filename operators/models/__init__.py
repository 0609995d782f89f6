"""Model backends for the AI steps: the protocols they implement and the offline defaults."""

from operators.models._types import (
    AnswerComposer,
    Article,
    Classifier,
    ComposedAnswer,
    Judge,
    Label,
    Passage,
    Retrieved,
    Retriever,
    Verdict,
)
from operators.models.offline import (
    AnswerTemplate,
    BM25Index,
    ExtractiveComposer,
    LexicalGroundingJudge,
    LinearTextClassifier,
    load_articles,
    load_labelled_examples,
)

__all__ = [
    "AnswerComposer",
    "AnswerTemplate",
    "Article",
    "BM25Index",
    "Classifier",
    "ComposedAnswer",
    "ExtractiveComposer",
    "Judge",
    "Label",
    "LexicalGroundingJudge",
    "LinearTextClassifier",
    "Passage",
    "Retrieved",
    "Retriever",
    "Verdict",
    "load_articles",
    "load_labelled_examples",
]
