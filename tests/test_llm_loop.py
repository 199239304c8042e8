"""The whole loop through the OpenAI-compatible backend over real HTTP (scripted teacher), then the cache."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlmodel import select

from pwd_agent.leakage import key_options, load_gate, sample_text, words
from pwd_agent.runs import open_run
from pwd_agent.store import Chain, Chunk, LeakedSample, LLMCall, Round, Sample, Statement, TestItem, session_scope

from servers.scripted_teacher import ScriptedTeacher

pytestmark = pytest.mark.slow


@pytest.fixture
def teacher():
    server = ScriptedTeacher(leaky=True)
    yield server
    server.close()


DEBUGGER_PROMPTS = ("A student model answered a test item wrongly", "A student model does not know",
                    "A student model knows single facts")


def check_holdout_isolation(s, prompts: list[str]) -> None:
    """No holdout item's own text (its question, each key option: the parts no dev item and no KB
    node of its chain also holds) is in any request the Debugger made, nor in any patch sample."""
    items = s.exec(select(TestItem)).all()
    dev_texts = {t for i in items if i.split == "dev" for t in (i.question, *i.options)}
    # A key option that restates a step ("The alum dissolves.") is KB text, taught by design.
    kb = {c.id: " ".join(words(" ".join([c.summary, *c.steps]))) for c in s.exec(select(Chain)).all()}
    holdout = {t for i in items if i.split == "holdout"
               for t in (i.question, *(text for letter, text in key_options(i.options, i.answer)))
               if t not in dev_texts and " ".join(words(t)) not in kb[i.chain_id]}
    debugger = [p for p in prompts if p.startswith(DEBUGGER_PROMPTS)]
    judged = [p for p in debugger if p.startswith(DEBUGGER_PROMPTS[0])]
    assert len(holdout) >= 20 and judged and len(debugger) > len(judged)  # items to look for, and requests
    assert any(t in judged[0] for t in dev_texts)  # a dev item's text is found where it is sent
    assert not [t for t in holdout for p in debugger if t in p]
    patches = s.exec(select(Sample).where(Sample.origin == "patch")).all()
    assert patches and not [t for t in holdout for x in patches if t in f"{x.prompt} {x.answer}"]


def run(teacher, tiny_model, corpus, run_id: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", "--corpus", str(corpus), "--run-id", run_id, "-q", "--goal", "0.99",
            "--set", "llm.backend=openai", "--set", f"llm.base_url={teacher.url}", "--set", "llm.model=scripted",
            "--set", "llm.price_input_per_m=2.0", "--set", "llm.price_output_per_m=8.0",
            "--set", "loop.max_rounds=2", "--set", f"student.model={tiny_model}", *extra]
    return subprocess.run([sys.executable, "-m", "pwd_agent", *args], capture_output=True, text=True, timeout=600)


def test_openai_backend_runs_the_loop_and_a_second_run_hits_the_cache(teacher, tiny_model, small_corpus):
    first = run(teacher, tiny_model, small_corpus, "first")
    assert first.returncode == 3, first.stderr
    with session_scope(open_run("first").db_url) as s:
        rounds = s.exec(select(Round).order_by(Round.id)).all()
        assert [r.status for r in rounds] == ["evaluated"] * 3
        assert rounds[2].prompt_versions["extract/l3_chain"] == "1"  # saved beside the round's scores
        chunks = {c.id: c.text for c in s.exec(select(Chunk)).all()}
        chains = s.exec(select(Chain)).all()
        assert len(chains) >= 10
        chunk_of = {c.id: c.chunk_id for c in chains}
        assert all(st.source_quote in chunks[chunk_of[st.chain_id]] for st in s.exec(select(Statement)).all())
        assert {i.split for i in s.exec(select(TestItem)).all()} == {"dev", "holdout"}
        assert {x.origin for x in s.exec(select(Sample)).all()} == {"v1", "patch"}
        check_holdout_isolation(s, teacher.prompts)
        # The teacher copied its own key options into V1 and patch samples: the gate dropped them all.
        leaked = s.exec(select(LeakedSample)).all()
        assert {x.origin for x in leaked} == {"v1", "patch"} and all(x.part.startswith("option ") for x in leaked)
        gate = load_gate(s, 8, 0.4)
        assert not [x.id for x in s.exec(select(Sample)).all() if gate.check(sample_text(x))]
        calls = s.exec(select(LLMCall)).all()
        assert {c.agent for c in calls} == {"extractor", "tester", "builder", "debugger"}
        assert all(c.model == "scripted" and c.input_tokens > 0 for c in calls)
        assert {(c.prompt_name, c.prompt_version) for c in calls if c.agent == "tester"} == {("tests/test_item", "3")}
        assert sum(c.cost for c in calls) > 0 and all(c.ok for c in calls)
        assert {c.prompt_name for c in calls} >= {"extract/l3_chain", "extract/l2_statements", "extract/l1_concepts",
                                                  "tests/test_item", "builder/samples", "debugger/failure_judge"}
    status = subprocess.run([sys.executable, "-m", "pwd_agent", "status", "first"], capture_output=True, text=True)
    assert "extractor" in status.stdout and "cost" in status.stdout
    logs = subprocess.run([sys.executable, "-m", "pwd_agent", "logs", "first"], capture_output=True, text=True).stdout
    with session_scope(open_run("first").db_url) as s:
        extractor = [c for c in s.exec(select(LLMCall)).all() if c.agent == "extractor"]
    tokens = sum(c.input_tokens + c.output_tokens for c in extractor)
    cost = sum(c.cost for c in extractor)
    # The stage's last progress line carries the agent's calls, tokens and cost so far, as the ledger has them.
    assert re.search(rf"\[extract\] (\d+)/\1 chunks · extractor {len(extractor)} calls, {tokens} tokens, "
                     rf"\${cost:.4f}", logs), logs

    requests_after_first = teacher.requests
    # The same config again, paused once the KB is extracted (the gate is not part of the prompts).
    second = run(teacher, tiny_model, small_corpus, "second", "--set", "gates.after_kb=true")
    assert second.returncode == 6, second.stderr
    with session_scope(open_run("second").db_url) as s:
        extraction = [c for c in s.exec(select(LLMCall)).all() if c.agent == "extractor"]
        fresh = [c for c in s.exec(select(LLMCall)).all() if not c.cache_hit]
    assert len(extraction) == len(extractor) and all(c.cache_hit for c in extraction)  # zero new requests
    assert teacher.requests - requests_after_first == len(fresh)  # the ledger counts every request made
