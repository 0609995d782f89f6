"""Imports of optional packages, made when a model is built rather than at import.

scikit-learn, bm25s and the document parsers take about a second and 100 MB
to import, and come with the ``offline`` and ``documents`` extras: a runtime
that only calls model endpoints never loads them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from streamflow.errors import ConfigError

__all__ = ["require", "require_installed"]


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or say which extra installs it.

    Args:
        module: the dotted module name, e.g. ``sklearn.linear_model``.
        extra: the streamflow-ai extra that brings it, e.g. ``offline``.
        purpose: what needs it, for the message, e.g. ``LinearTextClassifier``.

    Returns:
        The imported module.

    Raises:
        ConfigError: the package is not installed (names the install command).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; "
            f"pip install -e '.[{extra}]' in a checkout of streamflow"
        ) from exc


def require_installed(module: str, *, extra: str, purpose: str) -> None:
    """Check that ``module`` can be imported, without importing it.

    For steps that import a package only when their stage starts: a missing
    extra still fails when the pipeline is built.

    Raises:
        ConfigError: the package is not installed (names the install command).
    """
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ConfigError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; "
            f"pip install -e '.[{extra}]' in a checkout of streamflow"
        )
