"""Real documents in: PDF, HTML, DOCX and text in any encoding, built here, converted, chunked,
every file accounted for; an extract unit that fails its schema is recorded and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents.extractor import extract_chunk, fit
from pwd_agent.config import load_config
from pwd_agent.convert import convert_file
from pwd_agent.corpus import MAX_SENTENCE_CHARS, chunk_document, scan_corpus, split_sentences
from pwd_agent.errors import CorpusError
from pwd_agent.llm.offline import OfflineAgents
from pwd_agent.nodes.extract import extract
from pwd_agent.nodes.ingest import ingest
from pwd_agent.report.status import render_status
from pwd_agent.runs import create_run
from pwd_agent.store import Chain, Chunk, Document, Event, LLMCall, SourceFile, WorkUnit, session_scope

from conftest import main_here

STEPS = ["Open the inlet valve.", "Then dose the alum into the mixing tank.",
         "Next, stir the water slowly for twenty minutes.", "Finally, let the flocs settle in the basin."]
ORDERED = "\n".join(f"{i}. {step}" for i, step in enumerate(STEPS, 1))

PAGE_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Water treatment</title></head><body>
<header><a href="/">Home</a> | <a href="/about">About the site</a></header>
<nav><ul><li><a href="/a">Navigation link one</a></li><li><a href="/b">Navigation link two</a></li></ul></nav>
<div class="navheader"><a href="prev.html">Prev</a> Chapter 1 <a href="next.html">Next</a></div>
<main><article><h1 id="water">Water treatment</h1>
<p>Raw water carries clay and organic matter. Coagulation removes them before filtration.</p>
<section id="coagulation"><h2>Coagulation procedure</h2><p>The operators follow these steps every morning.</p>
<ol>{items}</ol>
<table><tr><th>Chemical</th><th>Dose</th></tr><tr><td>Alum</td><td>30 mg/L</td></tr></table>
<pre><code>dose --chemical alum
# check the dose before mixing
mix --minutes 20</code></pre></section>
<h2><a id="checks"></a>Checks</h2><p>Measure the turbidity every hour and write it in the log book.</p>
</article></main>
<footer>Copyright 2024 Water Works. Privacy policy.</footer></body></html>
""".replace("{items}", "".join(f"<li>{step}</li>" for step in STEPS))


def make_pdf(path: Path) -> Path:
    """Two pages, each title a bookmark (the PDF's outline), a numbered procedure on page 2."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.start_section("Water treatment")
    pdf.cell(0, 10, "Water treatment", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "Raw water carries clay and organic matter. Coagulation removes them.")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.start_section("Coagulation procedure", level=1)
    pdf.cell(0, 10, "Coagulation procedure", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for line in ORDERED.splitlines():
        pdf.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Water treatment", 1)
    document.add_paragraph("Raw water carries clay and organic matter.")
    document.add_heading("Coagulation procedure", 2)
    for step in STEPS:
        document.add_paragraph(step, style="List Number")
    table = document.add_table(rows=2, cols=2)
    for (row, col), text in {(0, 0): "Chemical", (0, 1): "Dose", (1, 0): "Alum", (1, 1): "30 mg/L"}.items():
        table.cell(row, col).text = text
    document.save(str(path))
    return path


def test_pdf_pages_outline_headings_and_list_order(tmp_path):
    converted = convert_file(make_pdf(tmp_path / "manual.pdf"))
    assert converted.converter == "pdf:pypdf"
    chunks = chunk_document(converted.markdown, 1500)
    assert [(c.heading, c.page) for c in chunks] == [("Water treatment", 1), ("Coagulation procedure", 2)]
    assert chunks[0].text == "Raw water carries clay and organic matter. Coagulation removes them."
    assert chunks[1].text == ORDERED  # the numbered steps, one per line, in order


def test_docx_headings_numbered_list_and_table(tmp_path):
    converted = convert_file(make_docx(tmp_path / "plant.docx"))
    assert converted.converter == "docx:mammoth"
    chunks = chunk_document(converted.markdown, 1500)
    assert [c.heading for c in chunks] == ["Water treatment", "Coagulation procedure"]
    assert chunks[1].text == ORDERED + "\n\n| Chemical | Dose |\n| --- | --- |\n| Alum | 30 mg/L |"


def test_html_main_content_with_anchors_table_and_whole_code(tmp_path):
    page = tmp_path / "water.html"
    page.write_text(PAGE_HTML)
    converted = convert_file(page)
    for furniture in ("Navigation link", "About the site", "Prev", "Copyright"):
        assert furniture not in converted.markdown
    chunks = chunk_document(converted.markdown, 1500)
    assert [(c.heading, c.anchor) for c in chunks] == [
        ("Water treatment", "water"), ("Coagulation procedure", "coagulation"), ("Checks", "checks")]
    body = chunks[1].text
    assert body.startswith("The operators follow these steps every morning.\n\n" + ORDERED)
    assert "| Chemical | Dose |\n| --- | --- |\n| Alum | 30 mg/L |" in body
    # The code block whole, its '#' line not a heading, and no sentence taken from it.
    assert "```\ndose --chemical alum\n# check the dose before mixing\nmix --minutes 20\n```" in body
    assert not any("dose --chemical" in body[s:e] for s, e in split_sentences(body))


def test_text_in_latin_1_and_long_sentences_cut_to_fit(tmp_path):
    latin = tmp_path / "cafe.txt"
    latin.write_bytes("Café de l'eau: the water is pumped à la station. Then it is filtered.".encode("latin-1"))
    converted = convert_file(latin)
    assert converted.markdown == "Café de l'eau: the water is pumped à la station. Then it is filtered."
    assert converted.converter == "text:cp1252"
    long = "Then the operator " + "checks the valve, the gauge and the pipe, " * 20 + "and closes it."
    spans = split_sentences(long)
    assert max(e - s for s, e in spans) <= MAX_SENTENCE_CHARS and len(spans) == 2
    assert long[spans[0][0]:spans[0][1]].endswith(",")  # cut at a clause boundary
    assert fit("x " * 150) == ("x " * 99).rstrip() + "…" and len(fit("y" * 300)) == 200


def corpus_folder(tmp_path: Path) -> Path:
    """Good files of every type and one bad file of each kind."""
    folder = tmp_path / "docs"
    folder.mkdir()
    make_pdf(folder / "manual.pdf")
    make_docx(folder / "plant.docx")
    (folder / "water.html").write_text(PAGE_HTML)
    (folder / "cafe.txt").write_bytes("Café de l'eau: the water is pumped à la station. Then it is filtered."
                                      .encode("latin-1"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage\n%%EOF")
    (folder / "blob.md").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.txt").write_text("  \n")
    (folder / "water_copy.html").write_text(PAGE_HTML)
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "huge.md").write_text("# Big\n\n" + "Words go here. " * 80_000)
    (folder / ".hidden.md").write_text("# Not part of the corpus")
    return folder


SKIPS = {
    "blob.md": ("unreadable", "binary content"),
    "broken.pdf": ("unreadable", "pdf could not be read"),
    "water_copy.html": ("duplicate content", "same text as"),
    "empty.txt": ("empty", "no text"),
    "huge.md": ("over max_file_mb", "corpus.max_file_mb=1"),
    "logo.png": ("unsupported type", "'.png' is not in corpus.extensions"),
}


def test_every_file_recorded_with_its_reason(tmp_path):
    extensions = load_config(None, []).corpus.extensions
    scan = scan_corpus(corpus_folder(tmp_path), extensions, max_file_mb=1)
    records = {Path(f.path).name: f for f in scan.files}
    assert sorted(records) == sorted(["manual.pdf", "plant.docx", "water.html", "cafe.txt", *SKIPS])
    assert {n: r.converter for n, r in records.items() if r.status == "converted"} == {
        "manual.pdf": "pdf:pypdf", "plant.docx": "docx:mammoth", "water.html": "html:markdownify",
        "cafe.txt": "text:cp1252"}
    for name, (reason, detail) in SKIPS.items():
        assert (records[name].status, records[name].reason) == ("skipped", reason), name
        assert detail in records[name].detail, (name, records[name].detail)
    assert scan.skip_summary() == ("6 files skipped (1 unsupported type, 1 over max_file_mb, 2 unreadable, 1 empty, "
                                   "1 duplicate content)")


def test_ingest_stores_provenance_and_records_and_status_counts(tmp_path):
    folder = corpus_folder(tmp_path)
    ctx = create_run(load_config(None, [f"corpus.path={folder}", "corpus.max_file_mb=1", "run_id=docs"]))
    ingest({}, Runtime(context=ctx))
    with session_scope(ctx.db_url) as s:
        files = {Path(f.path).name: f for f in s.exec(select(SourceFile)).all()}
        assert sum(f.status == "converted" for f in files.values()) == 4 and files["broken.pdf"].reason == "unreadable"
        chunks = s.exec(select(Chunk, Document.path).join(Document, Document.id == Chunk.document_id)).all()
        where = {(Path(path).name, c.heading): (c.page, c.anchor) for c, path in chunks}
        log = s.exec(select(Event).where(Event.node == "ingest")).one()
    assert where[("manual.pdf", "Coagulation procedure")] == (2, None)
    assert where[("water.html", "Coagulation procedure")] == (None, "coagulation")
    assert log.level == "warning" and "6 files skipped" in log.message and "broken.pdf (unreadable)" in log.message
    assert ("files: 4 converted, 6 skipped (2 unreadable, 1 duplicate content, 1 empty, 1 over max_file_mb, "
            "1 unsupported type)") in render_status(ctx)


def test_on_skip_error_stops_before_anything_is_stored(tmp_path, monkeypatch, capsys):
    folder = corpus_folder(tmp_path)
    result = main_here(monkeypatch, capsys, "run", "--corpus", str(folder), "--run-id", "strict",
                       "--set", "corpus.on_skip=error")
    assert result.returncode == 2
    assert "broken.pdf (unreadable" in result.stderr and "corpus.on_skip=warn" in result.stderr
    assert not (Path("runs") / "strict").exists()  # no run folder, no store
    ctx = create_run(load_config(None, [f"corpus.path={folder}", "corpus.on_skip=error", "run_id=node"]))
    with pytest.raises(CorpusError, match="5 files skipped"):
        ingest({}, Runtime(context=ctx))
    with session_scope(ctx.db_url) as s:  # the node itself: nothing half-written either
        assert s.exec(select(Document)).all() == [] and s.exec(select(SourceFile)).all() == []


# A bold term over the schema's 200-character bound: the offline rules build a ConceptDraft that
# fails validation (a failed unit), while the 700-character step is cut to fit and extracts.
LONG_TERM = "**" + "very " * 45 + "long term** is a word that names the whole procedure."
BAD_CHUNK = f"{LONG_TERM}\n\n1. First, the **very very long term** starts.\n2. Then it goes on.\n3. Finally, it stops."
LONG_STEP = "Then the operator " + "checks the valve, the gauge and the pipe, " * 16 + "and closes it."
GOOD_CHUNK = (f"1. First, open the inlet valve.\n2. {LONG_STEP}\n3. Next, stir the water.\n"
              "4. Finally, let the flocs settle.")


def test_a_failed_unit_is_recorded_and_the_run_goes_on(tmp_path):
    direct = extract_chunk(OfflineAgents(), BAD_CHUNK, "Procedure", "Doc")
    assert direct.chain is None and direct.failure.startswith("l1_concepts: term: String should have at most 200")
    assert [c.ok for c in direct.calls] == [True, True, False]

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a_bad.md").write_text(f"# Bad procedure\n\n{BAD_CHUNK}\n")
    (folder / "b_good.md").write_text(f"# {'A heading that runs on ' * 12}\n\n{GOOD_CHUNK}\n")
    ctx = create_run(load_config(None, [f"corpus.path={folder}", "run_id=units"]))
    ingest({}, Runtime(context=ctx))
    update = extract({}, Runtime(context=ctx))
    assert update["counts"]["chains"] == 1
    with session_scope(ctx.db_url) as s:
        units = {u.key: u.error for u in s.exec(select(WorkUnit).where(WorkUnit.stage == "extract")).all()}
        chain = s.exec(select(Chain)).one()
        failed_calls = s.exec(select(LLMCall).where(LLMCall.ok.is_(False))).all()
        warning = s.exec(select(Event).where(Event.level == "warning", Event.node == "extract")).one()
    assert sorted(units.values(), key=str) == [None, units["1"]] and units["1"].startswith("l1_concepts: term")
    assert len(chain.process_name) <= 200 and chain.process_name.endswith("…")  # the long heading cut to fit
    assert any(step.startswith("Then the operator") for step in chain.steps)  # the long step cut to fit
    assert len(failed_calls) == 1 and failed_calls[0].error == units["1"]
    assert "chunk 1 (Bad procedure / Bad procedure) failed: l1_concepts" in warning.message
    assert "failed units: extract 1" in render_status(ctx)
    assert extract({}, Runtime(context=ctx))["counts"]["chains"] == 1  # a resumed run does not retry it


def test_failed_test_and_sample_units_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    """build_tests and synthesize: an offline answer that fails its schema is a failed unit (ledger
    row, marker, warning), not a crash; the other chains' items and samples are stored."""
    from pydantic import ValidationError

    from pwd_agent.schemas import SampleDraft
    from pwd_agent.nodes.build_tests import build_tests
    from pwd_agent.nodes.synthesize import synthesize
    from pwd_agent.store import Sample, TestItem

    def bad_sample() -> ValidationError:
        try:
            SampleDraft(kind="essay", prompt="p", answer="a")
        except ValidationError as exc:
            return exc

    write_item, write_samples = OfflineAgents.write_test_item, OfflineAgents.write_samples

    def item_fails_on_chain_1(self, chain, *args):
        if chain.id == 1 and args[-1] == 0:
            raise bad_sample()
        return write_item(self, chain, *args)

    def samples_fail_on_chain_2(self, chain, *args):
        if chain.id == 2:
            raise bad_sample()
        return write_samples(self, chain, *args)

    monkeypatch.setattr(OfflineAgents, "write_test_item", item_fails_on_chain_1)
    monkeypatch.setattr(OfflineAgents, "write_samples", samples_fail_on_chain_2)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.md").write_text(f"# One\n\n{GOOD_CHUNK}\n")
    (folder / "b.md").write_text("# Two\n\nFirst, the sand is washed. Then the sand is dried. "
                                 "Finally, the sand is sieved.\n")
    ctx = create_run(load_config(None, [f"corpus.path={folder}", "run_id=units2", "tests.items_per_chain=2"]))
    for node in (ingest, extract, build_tests, synthesize):
        node({}, Runtime(context=ctx))
    with session_scope(ctx.db_url) as s:
        units = {(u.stage, u.key): u.error for u in s.exec(select(WorkUnit)).all()}
        items = {(i.chain_id, i.variant) for i in s.exec(select(TestItem)).all()}
        sampled = {x.chain_id for x in s.exec(select(Sample)).all()}
        warnings = [e.message for e in s.exec(select(Event).where(Event.level == "warning")).all()]
    assert items == {(1, 1), (2, 0), (2, 1)} and sampled == {1}
    assert units[("build_tests", "1")].startswith("test_item: kind: Input should be")
    assert units[("synthesize", "2")].startswith("v1_samples: kind:") and units[("synthesize", "1")] is None
    assert any(w.startswith("chain 2 (Two) failed: v1_samples: kind") for w in warnings)
    assert "failed units: build_tests 1, synthesize 1" in render_status(ctx)
