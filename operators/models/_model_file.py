"""Saved model files: a zip with a JSON header and the joblib-pickled model.

The header (``streamflow-model.json``) records what the model is and the
versions of the libraries that pickled it, so a file is checked before any
unpickling: a pickled scikit-learn model only loads reliably in the version
that wrote it. Reading the header imports neither scikit-learn nor joblib.
Loading unpickles: load only model files you trust (ones you trained).
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from streamflow.errors import ConfigError

__all__ = [
    "FORMAT_VERSION",
    "ModelFileInfo",
    "read_model_file",
    "read_model_info",
    "write_model_file",
]

FORMAT_VERSION = 1
HEADER = "streamflow-model.json"
PAYLOAD = "model.joblib"
# Recorded in every file; scikit-learn must match exactly and numpy by major version.
LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "streamflow-ai")


@dataclass(frozen=True)
class ModelFileInfo:
    """What a model file's header says.

    Attributes:
        path: the file.
        kind: what the model is (``linear-text-classifier``).
        name: the model name written into traces.
        labels: the labels it returns.
        libraries: library name -> version that wrote it.
        created: when it was written (ISO 8601, UTC).
        examples: how many examples it was trained on.
    """

    path: Path
    kind: str
    name: str
    labels: tuple[str, ...]
    libraries: dict[str, str]
    created: str
    examples: int


def installed_versions() -> dict[str, str]:
    """The installed versions of the recorded libraries (without importing them)."""
    versions = {"python": platform.python_version()}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "not installed"
    return versions


def write_model_file(
    path: str | Path, model: Any, *, kind: str, name: str, labels: list[str], examples: int
) -> Path:
    """Write ``model`` and a header to ``path`` (replacing it atomically).

    Args:
        path: the file to write; its folder is created.
        model: the object to pickle with joblib.
        kind: what the model is, checked on load.
        name: the model name written into traces.
        labels: the labels it returns.
        examples: how many examples it was trained on.

    Returns:
        The path written.
    """
    import joblib

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": "streamflow-model",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "labels": labels,
        "examples": examples,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "libraries": installed_versions(),
    }
    payload = io.BytesIO()
    joblib.dump(model, payload)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(HEADER, json.dumps(header, indent=2))
        zf.writestr(PAYLOAD, payload.getvalue())
    partial.replace(target)
    return target


def read_model_info(path: str | Path, *, kind: str, retrain_hint: str) -> ModelFileInfo:
    """Read and check a model file's header: format, kind and library versions.

    Args:
        path: the model file.
        kind: the kind of model expected.
        retrain_hint: the command that writes a fresh file, quoted in errors.

    Returns:
        The header.

    Raises:
        ConfigError: no such file, not a model file, another kind of model, or
            written by a scikit-learn (or numpy major) version other than the
            installed one; the message names the fix.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model file {file} does not exist; write it with {retrain_hint}")
    try:
        with zipfile.ZipFile(file) as zf:
            header = json.loads(zf.read(HEADER))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConfigError(
            f"{file} is not a streamflow model file ({exc}); write it with {retrain_hint}"
        ) from exc
    if header.get("format") != "streamflow-model" or header.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{file}: model file format {header.get('format_version')!r} is not supported "
            f"(this streamflow reads version {FORMAT_VERSION}); write it again with {retrain_hint}"
        )
    if header.get("kind") != kind:
        raise ConfigError(f"{file} holds a {header.get('kind')!r} model, not a {kind!r}")
    saved: dict[str, str] = dict(header.get("libraries") or {})
    installed = installed_versions()
    for library, same in (("scikit-learn", _same), ("numpy", _same_major)):
        if not same(saved.get(library, "?"), installed[library]):
            raise ConfigError(
                f"{file} was saved with {library} {saved.get(library, '?')} and this environment "
                f"has {installed[library]}: retrain it with {retrain_hint} "
                f"(or install {library}=={saved.get(library, '?')})"
            )
    return ModelFileInfo(
        path=file,
        kind=kind,
        name=str(header.get("name", kind)),
        labels=tuple(str(label) for label in header.get("labels", [])),
        libraries=saved,
        created=str(header.get("created", "")),
        examples=int(header.get("examples", 0)),
    )


def read_model_file(path: str | Path, *, kind: str, retrain_hint: str) -> tuple[ModelFileInfo, Any]:
    """Check a model file's header, then unpickle its model.

    Args:
        path: the model file (trusted: unpickling runs code).
        kind: the kind of model expected.
        retrain_hint: the command that writes a fresh file, quoted in errors.

    Returns:
        The header and the model.

    Raises:
        ConfigError: as :func:`read_model_info`, or when the payload does not load.
    """
    import joblib

    info = read_model_info(path, kind=kind, retrain_hint=retrain_hint)
    with zipfile.ZipFile(info.path) as zf, zf.open(PAYLOAD) as payload:
        try:
            model = joblib.load(io.BytesIO(payload.read()))
        except Exception as exc:  # any unpickling failure means the same: write it again
            raise ConfigError(
                f"{info.path}: the model does not load ({type(exc).__name__}: {exc}); "
                f"write it again with {retrain_hint}"
            ) from exc
    return info, model


def _same(saved: str, installed: str) -> bool:
    return saved == installed


def _same_major(saved: str, installed: str) -> bool:
    return saved.split(".")[0] == installed.split(".")[0]
