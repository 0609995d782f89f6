"""Load a pipeline from a Python file path or a ``module:attribute`` reference."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from streamflow.errors import ConfigError, StreamflowError
from streamflow.runtime import Pipeline

__all__ = ["load_pipeline"]


def load_pipeline(ref: str) -> Pipeline:
    """Return the Pipeline that ``ref`` names.

    Args:
        ref: ``path/to/file.py`` (which defines ``pipeline``), ``path/to/file.py:attr``,
            or ``package.module:attribute``.

    Raises:
        ConfigError: the file or module cannot be loaded, or has no Pipeline there.
    """
    target, _, attribute = ref.partition(":")
    if target.endswith(".py") or Path(target).is_file():
        module = _load_file(Path(target))
        attribute = attribute or "pipeline"
    else:
        if not attribute:
            raise ConfigError(f"pipeline {ref!r}: give a path to a .py file or 'module:attribute'")
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"pipeline {ref!r}: cannot import {target!r}: {exc}") from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise ConfigError(f"pipeline {ref!r}: no attribute {attribute!r} in {target}")
    if not isinstance(found, Pipeline):
        raise ConfigError(
            f"pipeline {ref!r}: {attribute!r} is a {type(found).__name__}, not a Pipeline"
        )
    return found


def _load_file(path: Path) -> object:
    if not path.is_file():
        raise ConfigError(f"pipeline file {str(path)!r} does not exist")
    folder = str(path.resolve().parent)
    # The file's own folder goes on sys.path so its sibling modules import.
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"_streamflow_pipeline_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"pipeline file {str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except StreamflowError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"pipeline file {str(path)!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    return module
