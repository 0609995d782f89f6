"""Offline model backends: no network, named for what they are.

- :class:`LinearTextClassifier`: TF-IDF (words and word pairs) into a linear
  model fitted by SGD with calibrated confidences, trained from labelled
  examples, saved to and loaded from a versioned model file.
- :class:`BM25Index`: Okapi BM25 over a knowledge base (``bm25s``).
- :class:`ExtractiveComposer`: a reply made of the knowledge-base sentences that
  best overlap the question, in a per-category template, with citations.
- :class:`LexicalGroundingJudge`: word-overlap groundedness of an answer.
"""

from operators.models._bm25 import BM25Index, CategoryMode, load_articles
from operators.models._extractive import AnswerTemplate, ExtractiveComposer
from operators.models._grounding import LexicalGroundingJudge
from operators.models._linear import LinearTextClassifier, load_labelled_examples

__all__ = [
    "AnswerTemplate",
    "BM25Index",
    "CategoryMode",
    "ExtractiveComposer",
    "LexicalGroundingJudge",
    "LinearTextClassifier",
    "load_articles",
    "load_labelled_examples",
]
