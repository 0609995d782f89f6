"""The document-intake example, run through `streamflow run` on its shipped documents."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from streamflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "document_intake"
DOCUMENTS = EXAMPLE / "data" / "documents.jsonl"

# The example is a folder of the repository, not an installed package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.document_intake.chunking import count_tokens, split_into_chunks  # noqa: E402
from examples.document_intake.extract import UnreadableDocument, extract_file  # noqa: E402
from examples.document_intake.index import DocumentIndex  # noqa: E402


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def intake_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the example once into a temporary folder; return its outputs."""
    out = tmp_path_factory.mktemp("document_intake")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCUMENT_INTAKE_INDEX", str(out / "index"))
        env.delenv("OPENAI_BASE_URL", raising=False)
        code = main(
            [
                "run",
                str(EXAMPLE / "pipeline.py"),
                "--input",
                str(DOCUMENTS),
                "--output",
                str(out / "documents.jsonl"),
                "--no-progress",
            ]
        )
    records = {e["payload"]["id"]: e["payload"] for e in _lines(out / "documents.jsonl")}
    return {
        "code": code,
        "output": _lines(out / "documents.jsonl"),
        "records": records,
        "dead": _lines(out / "documents.dlq.jsonl"),
        "review": _lines(out / "documents.review.jsonl"),
        "index": out / "index",
    }


def test_run_exits_zero_with_unreadable_documents_in_the_input(intake_run: dict[str, Any]) -> None:
    assert intake_run["code"] == 0


def test_every_document_lands_in_output_or_dead_letters_exactly_once(
    intake_run: dict[str, Any],
) -> None:
    expected = [json.loads(line)["id"] for line in DOCUMENTS.read_text().splitlines() if line]
    landed = [e["payload"]["id"] for e in intake_run["output"]] + [
        d["id"] for d in intake_run["dead"]
    ]
    assert sorted(landed) == sorted(expected)
    assert len(landed) == len(set(landed))
    assert intake_run["review"] == []


@pytest.mark.parametrize(
    ("document_id", "doc_type", "fmt"),
    [
        ("doc-001", "invoice", "pdf"),
        ("doc-002", "invoice", "html"),
        ("doc-005", "contract", "markdown"),
        ("doc-007", "policy", "html"),
        ("doc-008", "support_article", "markdown"),
        ("doc-011", "resume", "text"),
        ("doc-013", "report", "pdf"),
    ],
)
def test_known_documents_get_their_type(
    intake_run: dict[str, Any], document_id: str, doc_type: str, fmt: str
) -> None:
    record = intake_run["records"][document_id]
    assert (record["doc_type"], record["format"]) == (doc_type, fmt)
    assert 0.3 <= record["confidence"] <= 1.0
    assert record["chunk_count"] >= 1


def test_broken_pdf_is_a_dead_letter_with_the_reason(intake_run: dict[str, Any]) -> None:
    letters = {d["id"]: d for d in intake_run["dead"]}
    broken = letters["doc-015"]
    assert broken["stage"] == "extract"
    assert broken["error"]["type"] == "UnreadableDocument"
    assert "cannot read PDF broken-scan.pdf" in broken["error"]["message"]
    missing = letters["doc-016"]
    assert "file not found: missing-board-minutes.pdf" in missing["error"]["message"]
    assert set(letters) == {"doc-015", "doc-016"}


def test_personal_data_is_redacted_in_the_record(intake_run: dict[str, Any]) -> None:
    incident = intake_run["records"]["doc-014"]
    assert incident["pii"] == {"card": 1, "email": 1, "phone": 1}
    resume = intake_run["records"]["doc-011"]
    assert resume["pii"] == {"email": 1, "phone": 1}
    assert "[EMAIL]" in resume["preview"] and "[PHONE]" in resume["preview"]
    everything = json.dumps(intake_run["output"])
    for secret in ("jane.doe@example.org", "415 555 0172", "4111 1111 1111 1111"):
        assert secret not in everything


def test_index_holds_only_redacted_chunks_of_the_documents_read(
    intake_run: dict[str, Any],
) -> None:
    index = DocumentIndex.load(intake_run["index"])
    assert index.document_ids == set(intake_run["records"])
    assert len(index) == sum(r["chunk_count"] for r in intake_run["records"].values())
    stored = "".join(p.read_text() for p in intake_run["index"].glob("shard-*.jsonl"))
    assert "4111 1111 1111 1111" not in stored and "[CARD]" in stored


@pytest.mark.parametrize(
    ("query", "document_id"),
    [
        ("my wireless printer does not show up in the list", "doc-009"),
        ("how long do we keep CCTV footage before deleting it", "doc-007"),
        ("expired TLS certificate caused card payments to fail at checkout", "doc-014"),
        ("total amount due for sea freight and customs clearance", "doc-001"),
    ],
)
def test_search_finds_the_document_that_answers_the_query(
    intake_run: dict[str, Any], query: str, document_id: str
) -> None:
    hits = DocumentIndex.load(intake_run["index"]).search(query, k=3)
    assert hits, f"no hit for {query!r}"
    assert hits[0].document_id == document_id


def test_chunks_are_embedded_at_the_endpoint_when_openai_base_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.document_intake.index import EndpointEmbedder
    from operators.models.openai import ModelClient, ModelEndpoint
    from streamflow.errors import ConfigError
    from streamflow.testing.openai_server import serve_openai_in_thread

    output = tmp_path / "documents.jsonl"
    folder = tmp_path / "index"
    with serve_openai_in_thread(embedding_dims=256) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DOCUMENT_INTAKE_EMBED_MODEL", "streamflow-embed")
        monkeypatch.setenv("DOCUMENT_INTAKE_INDEX", str(folder))
        code = main(
            ["run", str(EXAMPLE / "pipeline.py"), "--input", str(DOCUMENTS),
             "--output", str(output), "--no-progress"]
        )  # fmt: skip
        embedding_calls = server.count(path="/v1/embeddings", status=200)

        async def search_at_endpoint() -> list[Any]:
            async with ModelClient(ModelEndpoint(base_url=server.base_url)) as client:
                index = DocumentIndex.load(folder, EndpointEmbedder(client, "streamflow-embed"))
                return await index.asearch("wireless printer network settings", k=1)

        hits = asyncio.run(search_at_endpoint())
    records = [e["payload"] for e in _lines(output)]
    assert code == 0
    assert len(records) == 14
    assert {r["index"] for r in records} == {"streamflow-embed"}
    assert 1 <= embedding_calls < len(records)  # micro-batched, not one call per document
    assert hits[0].document_id == "doc-009"
    with pytest.raises(ConfigError, match="pass an embedder"):
        DocumentIndex.load(folder)


@pytest.mark.parametrize("path", sorted((EXAMPLE / "data" / "docs").glob("[!b]*.*")))
def test_chunks_of_each_sample_keep_the_budget_and_every_word(path: Path) -> None:
    text = extract_file(path).text
    chunks = split_into_chunks(text, max_tokens=40, overlap=10)
    assert chunks
    assert max(c.tokens for c in chunks) <= 40
    assert all(c.tokens == count_tokens(c.text) for c in chunks)
    body = [b for b in text.split("\n\n") if not b.startswith("#")]
    chunked = " ".join(c.text for c in chunks).split()
    assert set(" ".join(body).split()) <= set(chunked)


def test_a_heading_starts_a_chunk_and_long_sections_overlap() -> None:
    sentence = "The retention period for {} records is seven years after closing."
    text = "# Retention\n\n" + " ".join(sentence.format(n) for n in range(8))
    text += "\n\n## Deletion\n\nRecords past their period are shredded."
    chunks = split_into_chunks(text, max_tokens=40, overlap=13)
    retention = [c for c in chunks if c.heading == "Retention"]
    assert [c.heading for c in chunks[len(retention) :]] == ["Deletion"]
    assert chunks[-1].text == "Records past their period are shredded."
    assert len(retention) >= 3
    for before, after in itertools.pairwise(retention):
        last_sentence = before.text.split(". ")[-1]
        assert after.text.startswith(last_sentence.rstrip("."))


def test_a_truncated_pdf_is_unreadable_with_the_reason() -> None:
    with pytest.raises(UnreadableDocument, match="damaged or truncated"):
        extract_file(EXAMPLE / "data" / "docs" / "broken-scan.pdf")


def test_documents_are_summarised_by_a_chat_model_when_an_endpoint_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamflow.testing.openai_server import serve_openai_in_thread

    output = tmp_path / "documents.jsonl"
    with serve_openai_in_thread(embedding_dims=64) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DOCUMENT_INTAKE_CHAT_MODEL", "streamflow-chat")
        monkeypatch.setenv("DOCUMENT_INTAKE_INDEX", str(tmp_path / "index"))
        code = main(
            ["run", str(EXAMPLE / "pipeline.py"), "--input", str(DOCUMENTS),
             "--output", str(output), "--no-progress"]
        )  # fmt: skip
        chat_calls = server.count(path="/v1/chat/completions", status=200)
    events = _lines(output)
    assert code == 0
    assert len(events) == 14
    assert chat_calls == 14  # one structured-output call per readable document
    for event in events:
        fields = event["payload"]["fields"]
        assert fields is not None, event["payload"]["id"]
        assert fields["summary"].strip()
        assert {"parties", "dates", "amounts", "references"} <= set(fields)
        [step] = [r for r in event["trace"] if r["step"] == "summarise"]
        assert step["model"] == "streamflow-chat"
        assert step["tokens_in"] > 0 and step["tokens_out"] > 0
    assert [r["step"] for r in events[0]["trace"]].index("summarise") > [
        r["step"] for r in events[0]["trace"]
    ].index("redact")


def test_the_chat_model_sees_only_redacted_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamflow.testing.openai_server import serve_openai_in_thread

    prompts: list[str] = []

    def reply(request: dict[str, Any]) -> str:
        prompts.append(" ".join(str(m.get("content")) for m in request.get("messages", [])))
        return json.dumps(
            {"summary": "A document.", "parties": [], "dates": [], "amounts": [], "references": []}
        )

    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "note.txt").write_text(
        "Refund request\n\nPlease refund me, write to jane.doe@example.org or call "
        "+44 20 7946 0958. Card 4111 1111 1111 1111 was charged.\n"
    )
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"id": "note", "path": str(folder / "note.txt")}) + "\n")
    with serve_openai_in_thread(reply=reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DOCUMENT_INTAKE_INDEX", str(tmp_path / "index"))
        code = main(
            ["run", str(EXAMPLE / "pipeline.py"), "--input", str(refs),
             "--output", str(tmp_path / "out.jsonl"), "--no-progress"]
        )  # fmt: skip
    assert code == 0
    [prompt] = [p for p in prompts if "Refund request" in p]
    assert "jane.doe@example.org" not in prompt
    assert "4111" not in prompt and "7946" not in prompt
    assert "[EMAIL]" in prompt


def test_documents_are_read_from_any_folder_the_user_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.document_intake.references import main as write_refs

    inbox = tmp_path / "somewhere" / "inbox"
    (inbox / "sub").mkdir(parents=True)
    samples = sorted((EXAMPLE / "data" / "docs").glob("[!b]*.*"))[:3]
    for n, sample in enumerate(samples):
        (inbox / ("sub" if n else "") / sample.name).write_bytes(sample.read_bytes())
    (inbox / "ignored.bin").write_bytes(b"\0")
    refs = tmp_path / "refs.jsonl"
    assert write_refs([str(inbox), "--out", str(refs)]) == 0
    lines = _lines(refs)
    assert len(lines) == 3
    assert all(Path(line["path"]).is_absolute() for line in lines)

    output = tmp_path / "out.jsonl"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("DOCUMENT_INTAKE_INDEX", str(tmp_path / "index"))
    code = main(
        ["run", str(EXAMPLE / "pipeline.py"), "--input", str(refs),
         "--output", str(output), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert sorted(e["payload"]["path"] for e in _lines(output)) == sorted(
        line["path"] for line in lines
    )
    assert _lines(tmp_path / "out.dlq.jsonl") == []

    # Limited to named folders, a file elsewhere is a dead letter naming them.
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("Hello\n\nA note from elsewhere.\n")
    refs.write_text(
        json.dumps({"id": "in", "path": lines[0]["path"]})
        + "\n"
        + json.dumps({"id": "out", "path": str(elsewhere)})
        + "\n"
    )
    monkeypatch.setenv("DOCUMENT_INTAKE_FOLDERS", str(inbox))
    limited = tmp_path / "limited.jsonl"
    code = main(
        ["run", str(EXAMPLE / "pipeline.py"), "--input", str(refs),
         "--output", str(limited), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert [e["payload"]["id"] for e in _lines(limited)] == ["in"]
    [dead] = _lines(tmp_path / "limited.dlq.jsonl")
    assert "outside the folders documents are read from" in json.dumps(dead)
