"""Model backends over an OpenAI-compatible endpoint, behind the same protocols as the offline ones.

- :class:`LLMClassifier`: a chat model answers ``{label, confidence, reason}`` as JSON.
- :class:`EmbeddingCentroidClassifier`: nearest label centroid of embedded examples.
- :class:`EmbeddingRetriever`: cosine search over the embedded knowledge base.
- :class:`HybridRetriever`: BM25 and embeddings fused (reciprocal rank or normalised scores).
- :class:`ChatComposer`: a streamed answer citing passages as ``[id]``.
- :class:`LLMJudge`: a chat model answers ``{outcome, reasons, groundedness}`` as JSON.

Each takes a :class:`~operators.models.ModelClient`, a model name and a
:class:`CallPolicy` (the endpoint's shared rate limiter, retries that honour
``Retry-After``, a token counter), and reports tokens and cost on what it
returns, so the step factories write them on the trace record. Give the
client ``on_request=report_request`` to count every HTTP attempt in the
running pipeline's metrics.
"""

from operators.models._llm_calls import (
    DEFAULT_MODEL_RETRY,
    CallPolicy,
    estimate_tokens,
    report_request,
)
from operators.models._llm_classify import (
    ClassifierAnswer,
    EmbeddingCentroidClassifier,
    LLMClassifier,
    LLMLabel,
    UnknownLabel,
)
from operators.models._llm_compose import (
    ChatComposer,
    JudgeAnswer,
    JudgeOutcome,
    JudgeVerdict,
    LLMJudge,
    parse_citations,
)
from operators.models._llm_retrieve import EmbeddingRetriever, FusionMode, HybridRetriever
from operators.models._vector import VectorIndex

__all__ = [
    "DEFAULT_MODEL_RETRY",
    "CallPolicy",
    "ChatComposer",
    "ClassifierAnswer",
    "EmbeddingCentroidClassifier",
    "EmbeddingRetriever",
    "FusionMode",
    "HybridRetriever",
    "JudgeAnswer",
    "JudgeOutcome",
    "JudgeVerdict",
    "LLMClassifier",
    "LLMJudge",
    "LLMLabel",
    "UnknownLabel",
    "VectorIndex",
    "estimate_tokens",
    "parse_citations",
    "report_request",
]
