"""The LLM backend against a REAL OpenAI-compatible server: llama.cpp (xllamacpp) serving SmolLM2 on 127.0.0.1.

SmolLM2-135M is a weak teacher: its answers are often wrong in substance (steps that repeat, options
that say the same), so these tests see the rejection path end to end: the reason sent back, the
re-ask, the failed unit in the ledger, a clean stop, and the cache replaying every reply. At
temperature 0 on the pinned llama.cpp build (xllamacpp in pyproject's dev extra) the outcome is
deterministic, so the assertions are exact.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import select

from pwd_agent.runs import open_run
from pwd_agent.store import Chain, Chunk, LLMCall, Sample, Statement, TestItem, session_scope
from pwd_agent.student import SMOLLM2_GGUF, _smollm2_dir

from conftest import EXAMPLES

# extended: llama.cpp's own server (its start and model load are most of the time); the default run
# drives the same client through the loop against a local HTTP teacher (test_llm_loop, test_openai_backend).
pytestmark = [pytest.mark.llm_server, pytest.mark.slow, pytest.mark.extended]
SERVER = Path(__file__).parent / "servers" / "llama_server.py"
# One request at a time on a 2-thread server: a client timeout would leave the server busy with the
# abandoned request and the retry queued behind it, so on a loaded machine timeouts would cascade.
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def llama_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER), str(_smollm2_dir() / SMOLLM2_GGUF), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # a loaded machine loads the model slowly
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "llama.cpp server did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


def run_llm(corpus: Path, url: str, tiny_model: Path, run_id: str) -> subprocess.CompletedProcess:
    args = ["run", "--corpus", str(corpus), "--run-id", run_id, "-q", "--goal", "0.99",
            "--set", "llm.backend=openai", "--set", f"llm.base_url={url}", "--set", "llm.model=smollm2",
            "--set", "llm.max_tokens=400", "--set", "llm.max_format_retries=1", "--set", "llm.max_concurrency=1",
            "--set", f"llm.timeout_s={TIMEOUT_S}",
            "--set", "tests.items_per_chain=1", "--set", "loop.max_rounds=1", "--set", f"student.model={tiny_model}"]
    return subprocess.run([sys.executable, "-m", "pwd_agent", *args], capture_output=True, text=True, timeout=900)


def test_whole_loop_on_a_real_server_then_cache(llama_url, tiny_model, tmp_path):
    """At temperature 0 on a fixed build the teacher's answers are deterministic, so is what they do
    to the store: SmolLM2-135M repeats steps in every chain it extracts, each answer is sent back
    once with the reason and fails again, no chain is stored, and the run stops cleanly at its
    first training round for lack of data. The second run replays all of it from the cache."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(EXAMPLES / "01_coagulation.md", corpus)
    first = run_llm(corpus, llama_url, tiny_model, "llm1")
    assert first.returncode == 2 and "Traceback" not in first.stderr, first.stderr
    assert "round 1 has no training samples" in first.stderr, first.stderr

    with session_scope(open_run("llm1").db_url) as s:
        calls = s.exec(select(LLMCall)).all()
        n_chunks = len(s.exec(select(Chunk)).all())
        assert [len(s.exec(select(table)).all()) for table in (Chain, Statement, TestItem, Sample)] == [0, 0, 0, 0]
    assert n_chunks == 3 and len(calls) == 2 * n_chunks  # each chunk: the answer and one re-ask (max_format_retries=1)
    assert {(c.agent, c.prompt_name, c.prompt_version, c.model, c.ok, c.cache_hit) for c in calls} == {
        ("extractor", "extract/l3_chain", "1", "smollm2", False, False)}
    assert all(c.error.startswith("steps repeat") and c.input_tokens > 0 and c.output_tokens > 0 for c in calls)
    first_calls = sorted((c.prompt_hash, c.ok, c.output_tokens) for c in calls)

    second = run_llm(corpus, llama_url, tiny_model, "llm2")
    assert second.returncode == first.returncode, second.stderr
    with session_scope(open_run("llm2").db_url) as s:
        replayed = s.exec(select(LLMCall)).all()
    # Zero new requests: every reply, rejected ones too, is replayed from the cache, re-asks included.
    assert all(c.cache_hit and c.cost == 0 for c in replayed)
    assert sorted((c.prompt_hash, c.ok, c.output_tokens) for c in replayed) == first_calls


def test_tester_and_builder_on_a_real_server(llama_url):
    """The KB comes from the offline rules; the item and the samples come from the served model."""
    from pwd_agent.schemas import KBChain, KBStatement
    from pwd_agent.config import LLMConfig
    from pwd_agent.corpus import chunk_document, read_corpus
    from pwd_agent.llm.cache import ResponseCache
    from pwd_agent.llm.llm_agents import LLMAgents
    from pwd_agent.llm.offline import OfflineAgents
    from pwd_agent.llm.openai_compat import StructuredClient, take_records

    doc = read_corpus(EXAMPLES / "02_flocculation.md", [".md"])[0]
    chunk = chunk_document(doc.text, 1500)[1]
    rules = OfflineAgents()
    chain = rules.extract_chain(chunk.text, chunk.heading, doc.title)
    kb_chain = KBChain(id=1, **chain.model_dump())
    statements = [KBStatement(id=i + 1, chain_id=1, **s.model_dump())
                  for i, s in enumerate(rules.extract_statements(chunk.text, chain))]
    cfg = LLMConfig(backend="openai", base_url=llama_url, model="smollm2", max_tokens=500, max_format_retries=1,
                    timeout_s=TIMEOUT_S)
    agents = LLMAgents(StructuredClient(cfg, ResponseCache(Path("llm_cache.sqlite"))))

    take_records()
    item = agents.write_test_item(kb_chain, statements, [], 0)
    samples = agents.write_samples(kb_chain, statements, [], [], 1, 0.6, 0.3)
    records = take_records()
    # Deterministic at temperature 0: the item's first answer is cut at max_tokens, its re-ask repeats
    # an option; both sample answers write a choice question without four options. Each rejection
    # is in the ledger with its reason, and nothing half-valid comes back.
    assert item is None and samples == []
    assert [(r.prompt_name, r.ok) for r in records] == [("tests/test_item", False)] * 2 + [
        ("builder/samples", False)] * 2
    assert [r.error.split(":")[0] for r in records] == [
        "the JSON", "the four options must say four different things",
        "sample 0 is a choice question", "sample 0 is a choice question"]
    assert all(r.input_tokens > 0 and r.output_tokens > 0 and not r.cache_hit for r in records)

    again = agents.write_samples(kb_chain, statements, [], [], 1, 0.6, 0.3)
    repeat = take_records()
    assert again == samples  # the same replies, replayed from the cache without a request
    assert [(r.prompt_name, r.ok, r.cache_hit) for r in repeat] == [("builder/samples", False, True)] * 2
