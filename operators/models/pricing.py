"""What model calls cost: a table of USD per million input and output tokens.

The shipped defaults are OpenAI's public list prices of a few hosted models as
of :data:`PRICES_AS_OF`; prices change, so set your own, in code
(``table.set("gpt-4o", 2.5, 10.0)``) or for a whole deployment:

- ``STREAMFLOW_MODEL_PRICES``: ``model=input/output`` pairs, comma-separated,
  USD per million tokens (``"gpt-4o=2.5/10,my-llama=0/0"``);
- ``STREAMFLOW_MODEL_PRICES_FILE``: a JSON file ``{"model": [input, output]}``
  (or ``{"model": {"input": .., "output": ..}}``).

Both override the defaults (the variable wins over the file). A model the
table does not know has an unknown cost: :meth:`PriceTable.cost` returns None,
traces and summaries say "unknown" rather than 0, and building a backend for
it logs a warning once (self-hosted models usually have no per-token price:
give them ``=0/0`` to say so). A missing price never fails a call.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from streamflow.errors import ConfigError

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_AS_OF",
    "PRICES_ENV",
    "PRICES_FILE_ENV",
    "ModelPrice",
    "PriceTable",
    "describe_defaults",
    "warn_if_unpriced",
]

logger = logging.getLogger(__name__)

PRICES_AS_OF = date(2025, 4, 14)
"""The date of the shipped list prices (:data:`DEFAULT_PRICES`)."""

PRICES_ENV = "STREAMFLOW_MODEL_PRICES"
"""Prices as ``model=input/output`` pairs, USD per million tokens, comma-separated."""

PRICES_FILE_ENV = "STREAMFLOW_MODEL_PRICES_FILE"
"""A JSON file of prices: ``{"model": [input, output]}``."""

_PER_TOKEN = 1_000_000
# A dated or tagged variant ("gpt-4o-mini-2024-07-18", "llama3:8b") takes the
# price of its base name; the separator keeps "gpt-4" from pricing "gpt-4o".
_VARIANT_SEPARATORS = ("-", ":", "@")


@dataclass(frozen=True)
class ModelPrice:
    """USD per one million tokens, in and out.

    Attributes:
        input_per_mtok: price of one million prompt (input) tokens.
        output_per_mtok: price of one million completion (output) tokens.
    """

    input_per_mtok: float
    output_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ConfigError("model prices must be >= 0 USD per million tokens")

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """USD for ``tokens_in`` input and ``tokens_out`` output tokens."""
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / _PER_TOKEN


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "o4-mini": ModelPrice(1.10, 4.40),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
    "text-embedding-3-small": ModelPrice(0.02),
    "text-embedding-3-large": ModelPrice(0.13),
    "text-embedding-ada-002": ModelPrice(0.10),
}
"""OpenAI list prices (USD per million tokens) as of :data:`PRICES_AS_OF`, used by
:meth:`PriceTable.defaults`."""


class PriceTable:
    """A mapping of model name to :class:`ModelPrice`, settable by the user.

    Lookup is by exact name first, then by the longest known base name of a
    dated or tagged variant (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``).
    """

    def __init__(
        self, prices: Mapping[str, ModelPrice | tuple[float, float]] | None = None
    ) -> None:
        """Create a table.

        Args:
            prices: model -> price, as :class:`ModelPrice` or an ``(input, output)``
                pair of USD per million tokens. Empty when omitted.

        Raises:
            ConfigError: on a negative price.
        """
        self._prices: dict[str, ModelPrice] = {}
        for model, price in (prices or {}).items():
            self._prices[model] = _as_price(price)

    @classmethod
    def defaults(cls) -> PriceTable:
        """A fresh table holding :data:`DEFAULT_PRICES` (safe to change)."""
        return cls(DEFAULT_PRICES)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PriceTable:
        """The defaults with the user's prices from the environment laid over them.

        Args:
            environ: the variables to read (default: ``os.environ``).

        Returns:
            A fresh table: :data:`DEFAULT_PRICES`, then the file named by
            ``STREAMFLOW_MODEL_PRICES_FILE``, then ``STREAMFLOW_MODEL_PRICES``.

        Raises:
            ConfigError: a price that cannot be read; the message names the variable.
        """
        env = os.environ if environ is None else environ
        table = cls.defaults()
        path = env.get(PRICES_FILE_ENV)
        if path:
            for model, price in _read_file(path).items():
                table._prices[model] = price
        inline = env.get(PRICES_ENV)
        if inline:
            for model, price in _parse_inline(inline).items():
                table._prices[model] = price
        return table

    def set(self, model: str, input_per_mtok: float, output_per_mtok: float = 0.0) -> None:
        """Set (or replace) the price of ``model``.

        Raises:
            ConfigError: on a negative price.
        """
        self._prices[model] = ModelPrice(input_per_mtok, output_per_mtok)

    def get(self, model: str) -> ModelPrice | None:
        """The price of ``model`` or of its base name; None when unknown."""
        price = self._prices.get(model)
        if price is not None:
            return price
        best: str | None = None
        for known in self._prices:
            if (
                len(model) > len(known)
                and model.startswith(known)
                and model[len(known)] in _VARIANT_SEPARATORS
                and (best is None or len(known) > len(best))
            ):
                best = known
        return None if best is None else self._prices[best]

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        """USD for a call to ``model``; None when the model has no known price.

        Args:
            model: the model name as sent to the endpoint.
            tokens_in: prompt tokens.
            tokens_out: completion tokens.

        Returns:
            The cost in USD, or None (unknown, not free).
        """
        price = self.get(model)
        return None if price is None else price.cost(tokens_in, tokens_out)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"


def _as_price(price: ModelPrice | tuple[float, float]) -> ModelPrice:
    if isinstance(price, ModelPrice):
        return price
    input_per_mtok, output_per_mtok = price
    return ModelPrice(float(input_per_mtok), float(output_per_mtok))


def describe_defaults() -> str:
    """One line saying what the shipped prices are and how old (for help texts and logs)."""
    return (
        f"{len(DEFAULT_PRICES)} OpenAI list prices as of {PRICES_AS_OF.isoformat()} "
        f"(set your own with {PRICES_ENV} or {PRICES_FILE_ENV})"
    )


_warned: set[tuple[int, str]] = set()
_warned_lock = threading.Lock()


def warn_if_unpriced(table: PriceTable, model: str) -> bool:
    """Log a warning, once per table and model, when ``model`` has no price.

    Backends call it when they are built (at start), so a run on a model
    without a price says so before its first call.

    Returns:
        True when the model has a price.
    """
    if model in table:
        return True
    key = (id(table), model)
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    logger.warning(
        "no price for model %r: its cost is reported as unknown; set one with %s=%s=IN/OUT "
        "(USD per million tokens, 0/0 for a free model) or in the file %s names",
        model,
        PRICES_ENV,
        model,
        PRICES_FILE_ENV,
    )
    return False


def _parse_inline(text: str) -> dict[str, ModelPrice]:
    prices: dict[str, ModelPrice] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        model, _, numbers = item.rpartition("=")
        parts = numbers.split("/")
        try:
            if not model or len(parts) > 2:
                raise ValueError(item)
            values = [float(p) for p in parts]
            prices[model.strip()] = ModelPrice(values[0], values[1] if len(values) > 1 else 0.0)
        except (ValueError, ConfigError):
            raise ConfigError(
                f"{PRICES_ENV}: cannot read {item!r}; write model=input/output in USD per "
                "million tokens, comma-separated (gpt-4o=2.5/10,my-llama=0/0)"
            ) from None
    return prices


def _read_file(path: str) -> dict[str, ModelPrice]:
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{PRICES_FILE_ENV}: cannot read prices from {path!r} ({exc}); give a JSON file "
            'such as {"gpt-4o": [2.5, 10]}'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f'{PRICES_FILE_ENV}: {path!r} must hold a JSON object {{"model": [in, out]}}'
        )
    prices: dict[str, ModelPrice] = {}
    for model, value in data.items():
        try:
            if isinstance(value, dict):
                prices[model] = ModelPrice(float(value["input"]), float(value.get("output", 0.0)))
            elif isinstance(value, list | tuple) and 1 <= len(value) <= 2:
                prices[model] = ModelPrice(*(float(v) for v in value))
            else:
                raise ValueError(value)
        except (KeyError, TypeError, ValueError, ConfigError):
            raise ConfigError(
                f"{PRICES_FILE_ENV}: the price of {model!r} in {path!r} is not [input, output] "
                "(USD per million tokens, >= 0)"
            ) from None
    return prices
