"""A griffe extension for the API reference: Sphinx roles in docstrings become code spans.

The docstrings name other objects the Sphinx way (``:class:`~streamflow.errors.FlowFull```),
which Markdown would show as it is; here it reads as ``FlowFull`` in code type.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`(~?)([^`]+)`")


def _code_span(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def plain_roles(text: str) -> str:
    """Return ``text`` with every Sphinx cross-reference role turned into a code span."""
    return _ROLE.sub(_code_span, text)


class SphinxRoles(griffe.Extension):
    """Rewrites each object's docstring once its package is loaded."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # The package's own module is not among the objects on_object visits.
        if pkg.docstring is not None:
            pkg.docstring.value = plain_roles(pkg.docstring.value)
