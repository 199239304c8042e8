"""The whole loop through the OpenAI-compatible backend over real HTTP (scripted teacher), then the cache."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlmodel import select

from pwd_agent.runs import open_run
from pwd_agent.store import Chain, Chunk, LLMCall, Round, Sample, Statement, TestItem, session_scope

from servers.scripted_teacher import ScriptedTeacher

pytestmark = pytest.mark.slow


@pytest.fixture
def teacher():
    server = ScriptedTeacher()
    yield server
    server.close()


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
        calls = s.exec(select(LLMCall)).all()
        assert {c.agent for c in calls} == {"extractor", "tester", "builder", "debugger"}
        assert all(c.model == "scripted" and c.input_tokens > 0 and c.prompt_version == "1" for c in calls)
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
