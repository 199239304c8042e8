"""Ingest helpers: reading, chunking, sentence spans."""

from pathlib import Path

import pytest

from pwd_agent.corpus import chunk_document, read_corpus, split_sentences
from pwd_agent.errors import CorpusError


def test_chunks_follow_headings_and_size():
    text = "# Title\n\nIntro one.\n\n## Part A\n\nFirst para.\nsame para.\n\nSecond para.\n\n## Part B\n\nB text."
    chunks = chunk_document(text, max_chars=200)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Title", "Intro one."),
        ("Part A", "First para. same para.\n\nSecond para."),
        ("Part B", "B text."),
    ]
    small = chunk_document(text, max_chars=20)
    assert [c.text for c in small if c.heading == "Part A"] == ["First para. same para.", "Second para."]


def test_sentence_spans_are_exact():
    text = "First, water enters. Then **alum** is added! Finally, flocs form."
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["First, water enters.", "Then **alum** is added!", "Finally, flocs form."]


def test_missing_empty_and_unreadable_corpora(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found"):
        read_corpus(tmp_path / "nope", [".md"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="is empty"):
        read_corpus(tmp_path / "empty", [".md"])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.pdf").write_bytes(b"%PDF-1.4")
    (junk / "b.txt").write_bytes(b"\x00\x01bad\xff")  # binary: NUL bytes, no BOM
    (junk / "c.md").write_text("   \n")
    with pytest.raises(CorpusError, match="no readable text"):
        read_corpus(junk, [".md", ".txt"])


def test_title_from_heading_or_file_name(tmp_path):
    (tmp_path / "water_cycle.txt").write_text("Water evaporates.")
    (tmp_path / "b.md").write_text("# Sand filters\n\nText.")
    docs = read_corpus(tmp_path, [".txt", ".md"])
    assert [d.title for d in docs] == ["Sand filters", "water cycle"]


def test_include_patterns_pick_files_by_their_path_in_the_folder(tmp_path):
    for name in ("01_a.md", "02_b.md", "03_c.md", "sub/04_d.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n\nText of {name}.")
    picked = read_corpus(tmp_path, [".md"], include=["0[13]_*.md", "sub/*"])
    assert [Path(d.path).name for d in picked] == ["01_a.md", "03_c.md", "04_d.md"]
    with pytest.raises(CorpusError, match=r"no files matching \['9\*'\]"):
        read_corpus(tmp_path, [".md"], include=["9*"])
