"""Write the input of the intake pipeline for every document in a folder you name.

    python examples/document_intake/references.py ~/inbox --out refs.jsonl
    streamflow run examples/document_intake/pipeline.py --input refs.jsonl --output out/docs.jsonl

One line per file whose type the pipeline reads (``.txt``, ``.md``, ``.html``,
``.pdf`` ...), found recursively, in path order, with its absolute path; the
id is the path inside the folder, so the same folder gives the same ids.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# Run as a script, the repository root must be importable for `examples.*`.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.document_intake.extract import FORMATS  # noqa: E402
from examples.document_intake.models import DocumentRef  # noqa: E402

__all__ = ["document_refs", "main"]


def document_refs(folder: str | Path, *, source: str | None = None) -> Iterator[DocumentRef]:
    """Yield a reference to each readable document under ``folder``.

    Args:
        folder: the folder to walk (recursively).
        source: the ``source`` of every reference (default: the folder's name).

    Returns:
        References with absolute paths, in path order.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in FORMATS:
            inside = path.relative_to(root).as_posix()
            yield DocumentRef(
                id=re.sub(r"[^A-Za-z0-9._/-]+", "-", inside),
                path=str(path),
                source=source or root.name,
            )


def main(argv: list[str] | None = None) -> int:
    """Write the references as JSONL; returns the exit status (2 for a bad folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="JSONL file (default: stdout)")
    parser.add_argument("--source", default=None, help="source of each document")
    args = parser.parse_args(argv)
    try:
        refs = list(document_refs(args.folder, source=args.source))
    except NotADirectoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = "".join(json.dumps(ref.model_dump()) + "\n" for ref in refs)
    if args.out is None:
        sys.stdout.write(lines)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(lines, encoding="utf-8")
        print(f"wrote {len(refs)} document references to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
