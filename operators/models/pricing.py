"""What model calls cost: a table of USD per million input and output tokens.

The defaults are public list prices of a few hosted models at the time of
writing; prices change, so set your own (``table.set("gpt-4o", 2.5, 10.0)``).
A model the table does not know costs 0: self-hosted models (vLLM, Ollama,
llama.cpp) usually have no per-token price, and a missing price must never
fail a call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from streamflow.errors import ConfigError

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable"]

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
"""List prices (USD per million tokens) used by :meth:`PriceTable.defaults`."""


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

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """USD for a call to ``model``; 0.0 when the model has no known price.

        Args:
            model: the model name as sent to the endpoint.
            tokens_in: prompt tokens.
            tokens_out: completion tokens.

        Returns:
            The cost in USD.
        """
        price = self.get(model)
        return 0.0 if price is None else price.cost(tokens_in, tokens_out)

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
