"""Pull normalised text out of plain text, Markdown, HTML and PDF files.

Every format comes out alike: blocks separated by a blank line, headings as
Markdown headings (``## Heading``). Markdown is parsed with markdown-it-py,
HTML with the standard library's ``html.parser`` (boilerplate such as
scripts, navigation and footers dropped), PDF with pypdf.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from examples.document_intake.models import DocumentFormat, DocumentRef, ExtractedDocument
from streamflow.errors import StepFailed
from streamflow.events import Event
from streamflow.ops import Operator, map_async

__all__ = ["FORMATS", "Extracted", "UnreadableDocument", "extract_file", "extract_text"]

FORMATS: dict[str, DocumentFormat] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}


class UnreadableDocument(StepFailed):
    """The file is missing, corrupt, of an unknown format, or holds no text.

    Not worth retrying: the document goes to the dead letters with the reason.
    """


@dataclass(frozen=True)
class Extracted:
    """What extraction found in one file."""

    format: DocumentFormat
    title: str
    text: str
    pages: int | None = None


def extract_file(path: Path) -> Extracted:
    """Read ``path`` and return its normalised text (blocking: call it in a thread).

    Args:
        path: the file; its suffix picks the format.

    Returns:
        The format, title, text and (for a PDF) page count.

    Raises:
        UnreadableDocument: missing file, unknown format, undecodable or corrupt
            content, or no text at all.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise UnreadableDocument(f"unsupported file type '{path.suffix}' (known: {known})")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableDocument(f"file not found: {path.name}") from None
    except OSError as exc:
        raise UnreadableDocument(f"cannot read {path.name}: {exc.strerror}") from exc
    if fmt == "pdf":
        result = _from_pdf(raw, path.name)
    else:
        try:
            source = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnreadableDocument(
                f"{path.name} is not UTF-8 text (bad byte at offset {exc.start})"
            ) from exc
        if fmt == "markdown":
            result = _from_markdown(source)
        elif fmt == "html":
            result = _from_html(source)
        else:
            result = _from_plain_text(source)
    if not result.text.strip():
        hint = " (a scanned image needs OCR first)" if fmt == "pdf" else ""
        raise UnreadableDocument(f"{path.name} has no extractable text{hint}")
    title = result.title or _first_line(result.text) or path.stem
    return Extracted(result.format, title, result.text, result.pages)


def extract_text(
    data_dir: str | Path,
    *,
    folders: Sequence[str | Path] | None = None,
    concurrency: int = 4,
    name: str = "extract",
) -> Operator:
    """Turn each DocumentRef into an ExtractedDocument by reading its file.

    ::

        in:   --ref1--ref2--ref3--|          ref2's file is a corrupt PDF
        out:  --doc1--ref2!-doc3--|          ref2 failed: UnreadableDocument -> dead letters

    Parsing runs in a worker thread (``asyncio.to_thread``): a PDF takes CPU
    time that would otherwise stall every other step on the loop.

    A reference's ``path`` is absolute (a file in any folder) or relative to
    ``data_dir``. With ``folders``, only files inside one of them are read:
    any other is a dead letter naming the folders (so references from an
    untrusted source cannot make the pipeline read, say, ``/etc``).

    Args:
        data_dir: the folder a relative ``path`` is relative to.
        folders: the folders files may be read from (None: any folder).
        concurrency: files read at once.
        name: the step name in traces.

    Returns:
        An Operator for a Stage.
    """
    root = Path(data_dir).expanduser().resolve()
    allowed = [Path(f).expanduser().resolve() for f in folders] if folders is not None else None

    async def extract_document(event: Event) -> Event:
        ref = event.payload_as(DocumentRef)
        path = (root / Path(ref.path).expanduser()).resolve()
        if allowed is not None and not any(path.is_relative_to(f) for f in allowed):
            raise UnreadableDocument(
                f"{ref.path} is outside the folders documents are read from: "
                + ", ".join(str(f) for f in allowed),
                stage=name,
                event_id=event.id,
            )
        try:
            found = await asyncio.to_thread(extract_file, path)
        except UnreadableDocument as exc:
            raise UnreadableDocument(
                f"{ref.path}: {exc.args[0]}", stage=name, event_id=event.id
            ) from exc.__cause__
        document = ExtractedDocument(
            **ref.model_dump(exclude={"format", "title", "text", "pages", "chars"}),
            format=found.format,
            title=found.title,
            text=found.text,
            pages=found.pages,
            chars=len(found.text),
        )
        return event.with_payload(document)

    return map_async(extract_document, concurrency=concurrency, name=name)


# -- formats ---------------------------------------------------------------------


def _from_plain_text(source: str) -> Extracted:
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", source.replace("\r\n", "\n")):
        lines = [line.rstrip() for line in block.strip("\n").splitlines()]
        if not any(lines):
            continue
        first = lines[0].strip()
        # A short line in capitals heads a section in plain-text documents.
        if first.isupper() and len(first.split()) <= 6:
            blocks.append(f"## {first.title()}")
            lines = lines[1:]
        if lines:
            blocks.append("\n".join(lines).strip())
    return Extracted("text", _first_line(source), "\n\n".join(blocks))


def _from_markdown(source: str) -> Extracted:
    tokens = MarkdownIt("commonmark").enable("table").parse(source)
    blocks: list[str] = []
    title = ""
    lists: list[list[int]] = []  # per open list: [is_ordered, next item number]
    row: list[str] | None = None
    for index, token in enumerate(tokens):
        kind = token.type
        if kind == "heading_open":
            text = _inline_text(tokens[index + 1])
            title = title or text
            blocks.append(f"{'#' * int(token.tag[1])} {text}")
        elif kind in ("bullet_list_open", "ordered_list_open"):
            start = int(token.attrGet("start") or 1)
            lists.append([kind == "ordered_list_open", start])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            blocks.append(" | ".join(row))
            row = None
        elif kind == "inline" and row is not None:
            row.append(_inline_text(token))
        elif kind == "inline" and tokens[index - 1].type == "paragraph_open":
            text = _inline_text(token)
            if lists and tokens[index - 2].type == "list_item_open":
                ordered, number = lists[-1]
                marker = f"{number}." if ordered else "-"
                lists[-1][1] += 1
                text = f"{'  ' * (len(lists) - 1)}{marker} {text}"
            blocks.append(text)
        elif kind in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
    return Extracted("markdown", title, "\n\n".join(b for b in blocks if b.strip()))


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return re.sub(r"\s+", " ", "".join(parts)).strip()


_SKIPPED = {"script", "style", "noscript", "template", "nav", "footer", "header", "aside", "svg"}
_BLOCKS = {
    "p", "div", "section", "article", "main", "li", "tr", "pre", "blockquote",
    "dd", "dt", "figcaption", "caption", "address", "table", "ul", "ol", "form",
}  # fmt: skip
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


class _HtmlText(HTMLParser):
    """Collects the visible text of a page as blocks; headings become Markdown headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title = ""
        self._buffer: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._heading = 0
        self._cells: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self._flush()
            self._heading = int(tag[1])
        elif tag in _BLOCKS:
            self._flush()
            if tag == "tr":
                self._cells = []
        elif tag in ("td", "th"):
            self._flush_cell()
        elif tag == "br":
            self._buffer.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _HEADINGS:
            self._flush()
        elif tag in ("td", "th"):
            self._flush_cell()
        elif tag == "tr":
            self._flush_cell()
            cells, self._cells = self._cells, None
            if cells:
                self.blocks.append(" | ".join(cells))
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip_depth:
            self._buffer.append(data)

    def close(self) -> None:
        super().close()
        self._flush()
        self.title = _collapse(self.title)

    def _flush_cell(self) -> None:
        if self._cells is not None:
            text = _collapse("".join(self._buffer))
            self._buffer.clear()
            if text:
                self._cells.append(text)

    def _flush(self) -> None:
        text = _collapse("".join(self._buffer))
        self._buffer.clear()
        if text:
            self.blocks.append(f"{'#' * self._heading} {text}" if self._heading else text)
        self._heading = 0


def _from_html(source: str) -> Extracted:
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    headings = [b.lstrip("#").strip() for b in parser.blocks if b.startswith("# ")]
    title = parser.title or (headings[0] if headings else "")
    return Extracted("html", title, "\n\n".join(parser.blocks))


def _from_pdf(raw: bytes, filename: str) -> Extracted:
    try:
        reader = PdfReader(BytesIO(raw))
        if reader.is_encrypted:
            raise UnreadableDocument(f"{filename} is encrypted; it needs a password")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata is not None else None
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # pypdf raises its own errors for damaged files, but a damaged object
        # table can also surface as a plain lookup or type error deep inside it.
        raise UnreadableDocument(
            f"cannot read PDF {filename}: {type(exc).__name__}: {exc} (damaged or truncated file)"
        ) from exc
    blocks: list[str] = []
    for page in pages:
        blocks.extend(_pdf_blocks(page))
    title = str(meta_title).strip() if meta_title else ""
    if blocks and title and blocks[0].lstrip("# ").strip() == title:
        blocks[0] = f"# {title}"
    return Extracted("pdf", title, "\n\n".join(blocks), pages=len(pages))


_SECTION_NUMBER = re.compile(r"^\d+(?:\.\d+)*\.?\s+")


def _pdf_blocks(page: str) -> list[str]:
    """Rebuild paragraphs from a PDF text layer, where every printed line is a line.

    A short line without closing punctuation heads a section; a line that ends
    a sentence and falls short of the page width ends a paragraph.
    """
    lines = [re.sub(r"\s+", " ", line).strip() for line in page.splitlines()]
    lines = [line for line in lines if line]
    width = max((len(line) for line in lines), default=0)
    blocks: list[str] = []
    current: list[str] = []
    for line in lines:
        words = len(line.split())
        unnumbered = _SECTION_NUMBER.sub("", line)
        if words <= 8 and not line.endswith((".", ",", ";", ":")) and unnumbered[:1].isupper():
            if current:
                blocks.append(" ".join(current))
                current = []
            blocks.append(f"## {line}")
            continue
        current.append(line)
        if line.endswith((".", "!", "?")) and len(line) < 0.85 * width:
            blocks.append(" ".join(current))
            current = []
    if current:
        blocks.append(" ".join(current))
    return blocks


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return ""
