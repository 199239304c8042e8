"""bench/make_world.py: seeded invented worlds, byte-identical per seed, that the offline extractor reads whole."""

import importlib.util
import re
import sys

import pytest

from pwd_agent.config import CorpusConfig, ExtractConfig
from pwd_agent.corpus import chunk_document, scan_corpus
from pwd_agent.llm.offline import OfflineAgents, clean

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("make_world", ROOT / "bench" / "make_world.py")
make_world = sys.modules["make_world"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(make_world)

# (seed, processes, steps): the second ends on a short document and takes the longest chains.
WORLDS = {"a": (7, 12, 6), "b": (8, 7, 8)}
_PRONOUN = re.compile(r"\b(it|its|this|these|those|they|them|their)\b", re.I)
# Every word the generator writes itself: what is left in a step is the world's invented words.
_FIXED = {w.lower() for table in (make_world.FIRST, make_world.MIDDLE, make_world.RESULT, make_world.FINAL,
                                  make_world.MIDDLE_CUES, make_world.COLOURS, make_world.NUMBERS,
                                  [v for pair in make_world.VERBS for v in pair], ["As a result, First, Finally, an"])
          for text in table for w in re.findall(r"[A-Za-z]+", text)}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """name -> folder of each world in WORLDS, written by the command line; "a2" is world "a" again."""
    root = tmp_path_factory.mktemp("worlds")
    for name, (seed, processes, steps) in {**WORLDS, "a2": WORLDS["a"]}.items():
        argv = ["--seed", str(seed), "--processes", str(processes), "--steps", str(steps), "--out", str(root / name)]
        assert make_world.main(argv) == 0
    return {name: root / name for name in (*WORLDS, "a2")}


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _extract(folder):
    """(README chunks' chains, [(chain, statements, concepts, chunk text)], section headings, unit) via the
    pipeline's own scan, chunking and offline extractor."""
    agents, kb, readme, headings = OfflineAgents(), [], [], []
    scan = scan_corpus(folder, CorpusConfig().extensions)
    assert not scan.skipped and len(scan.documents) == len(list(folder.iterdir()))
    for doc in scan.documents:
        headings += re.findall(r"^## (.+)$", doc.text, re.M)
        for chunk in chunk_document(doc.text, CorpusConfig().max_chunk_chars):
            chain = agents.extract_chain(chunk.text, chunk.heading, doc.title)
            if doc.path.endswith("README.md"):
                readme.append(chain)
            elif chain is not None:
                statements = agents.extract_statements(chunk.text, chain)
                kb.append((chain, statements, agents.extract_concepts(chunk.text, chain, statements), chunk.text))
    unit = re.search(r"A \*\*(\w+)\*\* is the guild's measure of time", scan.documents[0].text).group(1)
    return readme, kb, headings, unit


def test_same_seed_same_bytes_other_seed_other_world(worlds):
    assert _files(worlds["a"]) == _files(worlds["a2"])
    a, b = _files(worlds["a"]), _files(worlds["b"])
    assert len(a) == 4 + 1 and len(b) == 3 + 1  # documents of 3 processes, and README.md
    assert set(a) & set(b) == {"README.md"}
    terms = [{clean(t).lower() for text in files.values() for t in re.findall(r"\*\*(.+?)\*\*", text.decode())}
             for files in (a, b)]
    assert len(terms[0]) >= 4 * 12 and not terms[0] & terms[1]
    readme = a["README.md"].decode()
    assert "generated" in readme and "--seed 7 --processes 12 --steps 6" in readme


@pytest.mark.parametrize("name", WORLDS)
def test_offline_extractor_finds_every_process_whole(worlds, name):
    _, processes, steps = WORLDS[name]
    readme, kb, headings, _ = _extract(worlds[name])
    assert readme and not any(readme)  # the README is read as a document but names no process
    assert len(headings) == len(set(headings)) == processes
    assert [chain.process_name for chain, *_ in kb] == headings  # one chunk and one chain per section
    for chain, statements, concepts, text in kb:
        assert len(chain.steps) == steps and len(statements) == steps - 1, chain.process_name
        assert [st.position for st in statements] == list(range(steps - 1))
        assert all(st.source_quote in text for st in statements)
        causal = ["causes" if steps >= 5 and i == steps - 3 else "is followed by" for i in range(steps - 1)]
        assert [st.predicate for st in statements] == causal  # "As a result," right before "Finally,"
        assert chain.preconditions and chain.negative_constraints
        assert all(8 <= len(step.split()) <= 14 and not _PRONOUN.search(step) for step in chain.steps)
        # every bold term a concept, defined by its own sentence ("A **term** is ...")
        own = {c.term for c in concepts if re.match(rf"(a |the )?{re.escape(c.term)} is\b", c.definition.lower())}
        assert own == {clean(t).lower() for t in re.findall(r"\*\*(.+?)\*\*", text)}, chain.process_name
        assert len(own) >= 4 and chain.process_name.lower() in own


@pytest.mark.parametrize("name", WORLDS)
def test_every_step_names_its_own_process(worlds, name):
    """Each step names an invented word no other process uses, so steps are not interchangeable."""
    _, kb, _, unit = _extract(worlds[name])
    invented = [[{w for w in re.findall(r"[a-z]+", step.lower()) if w not in _FIXED} for step in chain.steps]
                for chain, *_ in kb]
    owners = {}
    for i, steps in enumerate(invented):
        for word in set().union(*steps):
            owners.setdefault(word, set()).add(i)
    shared = {w for w, who in owners.items() if len(who) > 1}
    assert shared <= {unit, f"{unit}s"}  # the guild's unit of time, the one word processes share
    assert all(step - shared for steps in invented for step in steps)
    all_steps = [clean(s).lower() for chain, *_ in kb for s in chain.steps]
    assert len(set(all_steps)) == len(all_steps)


def test_step_bounds_follow_the_extractor_defaults():
    assert (make_world.MIN_STEPS, make_world.MAX_STEPS) == (ExtractConfig().min_steps, ExtractConfig().max_steps)
    with pytest.raises(ValueError, match="steps must be 3 to 8"):
        make_world.make_world(1, steps=9)


def test_refuses_a_non_empty_out_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert make_world.main(["--seed", "1", "--out", str(out)]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary folder left beside it
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_world.main(["--seed", "1", "--processes", "2", "--out", str(empty)]) == 0
    assert sorted(p.name for p in empty.iterdir())[-1] == "README.md" and len(list(empty.iterdir())) == 2
