"""A classifier made when its stage starts: loaded from a model file, or trained.

Building a pipeline must stay cheap: every process that loads the pipeline
file builds it (``topics``, ``produce``, ``graph``, ``review``, and the
workers of other stages), and none of those labels anything. So ``classify``
checks its model file or examples when it is built (a bad path fails at
start), and loads or trains the model only when its stage starts, on a
thread of its own so the event loop keeps serving health checks and Kafka
heartbeats. The first batch waits for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from operators.models._linear import MODEL_KIND, LinearTextClassifier, load_labelled_examples
from operators.models._model_file import read_model_info
from operators.models._optional import require_installed
from operators.models._types import Label
from streamflow.errors import ConfigError

__all__ = ["DeferredClassifier"]

log = logging.getLogger("operators.classify")

Examples = Iterable[tuple[str, str]] | str | Path


class DeferredClassifier:
    """A :class:`LinearTextClassifier` loaded or trained on first need.

    With a model file that exists, the file is loaded; without one (or when
    :meth:`train` is called), the classifier is trained on the examples.

    Attributes:
        model_path: the model file, if one was named.
        examples: the training examples (a path or pairs), if any.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        examples: Examples | None = None,
        retrain_hint: str = "`streamflow train PIPELINE --stage STAGE`",
    ) -> None:
        """Check the model file or examples now; load or train later.

        Args:
            model_path: a model file written by ``streamflow train`` or
                :meth:`LinearTextClassifier.save`.
            examples: ``(text, label)`` pairs or a JSONL path, for training
                when there is no model file.
            retrain_hint: the command that writes the model file, quoted in errors.

        Raises:
            ConfigError: neither given; a model file that exists but is not a
                classifier or comes from another scikit-learn version; an
                examples path that does not exist; a model file that does
                not exist with no examples to train on.
        """
        if model_path is None and examples is None:
            raise ConfigError("classify: pass model=... or examples=... to train the default")
        self.model_path = Path(model_path) if model_path is not None else None
        self.examples: Examples | None = (
            examples if isinstance(examples, str | Path) or examples is None else list(examples)
        )
        self._hint = retrain_hint
        # A missing extra fails when the pipeline is built, not at the first event.
        require_installed("sklearn", extra="offline", purpose="LinearTextClassifier")
        self._name = "tfidf-sgd"
        self._labels: tuple[str, ...] = ()
        if isinstance(self.examples, str | Path) and not Path(self.examples).is_file():
            raise ConfigError(f"classify: no examples file at {self.examples}")
        if self.model_path is not None and (self.model_path.exists() or self.examples is None):
            # Checks the header only: format, kind and library versions; no unpickling.
            info = read_model_info(self.model_path, kind=MODEL_KIND, retrain_hint=retrain_hint)
            self._name, self._labels = info.name, info.labels
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future[LinearTextClassifier] | None = None

    @property
    def name(self) -> str:
        """The model name written into traces."""
        return self._name

    @property
    def labels(self) -> Sequence[str]:
        """The labels (known once the model file was read or the model made)."""
        return self._labels

    @property
    def will_train(self) -> bool:
        """True when starting trains the model (no model file to load)."""
        return self.model_path is None or not self.model_path.exists()

    @property
    def started(self) -> bool:
        """True once loading or training has begun (its stage started)."""
        return self._future is not None

    def train(self) -> LinearTextClassifier:
        """Train on the examples now, whatever the model file holds.

        Returns:
            The trained classifier (also the one this step uses from now on).

        Raises:
            ConfigError: there are no examples, or fewer than two labels.
        """
        if self.examples is None:
            raise ConfigError(
                f"classify loads {self.model_path} and has no examples to train on; "
                "pass examples=... to classify"
            )
        pairs = (
            load_labelled_examples(self.examples)
            if isinstance(self.examples, str | Path)
            else self.examples
        )
        model = LinearTextClassifier().fit(pairs)
        self._settle(model)
        return model

    def start(self) -> concurrent.futures.Future[LinearTextClassifier]:
        """Begin loading or training on a thread of its own (once); return its future."""
        with self._lock:
            if self._future is None:
                self._future = concurrent.futures.Future()
                thread = threading.Thread(target=self._make, name="classify-model", daemon=True)
                thread.start()
            return self._future

    def get(self) -> LinearTextClassifier:
        """Block until the model is ready and return it.

        Raises:
            ConfigError: the model file does not load or training failed.
        """
        return self.start().result()

    async def classify(self, texts: list[str]) -> list[Label]:
        """Label a batch, waiting for the model on its first call."""
        future = self.start()
        model = future.result() if future.done() else await asyncio.wrap_future(future)
        return model.predict(texts)

    def _make(self) -> None:
        assert self._future is not None
        try:
            if self.will_train:
                log.info(
                    "classify: training on %s (save a model with %s to skip this)",
                    self.examples if isinstance(self.examples, str | Path) else "the examples",
                    self._hint,
                )
                model = self.train()
            else:
                assert self.model_path is not None
                model = LinearTextClassifier.load(self.model_path, retrain_hint=self._hint)
                self._settle(model)
        except BaseException as exc:  # handed to whoever waits on the future
            # Said now, in the worker's log, not only when the first batch arrives.
            log.error("classify: the model could not be made: %s", exc)
            self._future.set_exception(exc)
            return
        self._future.set_result(model)

    def _settle(self, model: LinearTextClassifier) -> None:
        self._name, self._labels = model.name, tuple(model.labels)
