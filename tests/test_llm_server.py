"""The LLM backend against a REAL OpenAI-compatible server: llama.cpp (xllamacpp) serving SmolLM2 on 127.0.0.1.

SmolLM2-135M is a weak teacher: its answers are schema-valid (the server constrains them) but often
wrong in substance, so these tests see both stored units and re-asked-then-failed ones.
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

pytestmark = [pytest.mark.llm_server, pytest.mark.slow]
SERVER = Path(__file__).parent / "servers" / "llama_server.py"


@pytest.fixture(scope="module")
def llama_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER), str(_smollm2_dir() / SMOLLM2_GGUF), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
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
            "--set", "tests.items_per_chain=1", "--set", "loop.max_rounds=1", "--set", f"student.model={tiny_model}"]
    return subprocess.run([sys.executable, "-m", "pwd_agent", *args], capture_output=True, text=True, timeout=900)


def test_whole_loop_on_a_real_server_then_cache(llama_url, tiny_model, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(EXAMPLES / "01_coagulation.md", corpus)
    first = run_llm(corpus, llama_url, tiny_model, "llm1")
    assert first.returncode in (3, 2), first.stderr  # stopped short, or stopped for lack of data: both clean
    assert "Traceback" not in first.stderr

    with session_scope(open_run("llm1").db_url) as s:
        calls = s.exec(select(LLMCall)).all()
        extraction = [c for c in calls if c.agent == "extractor"]
        assert extraction and all(c.model == "smollm2" and not c.cache_hit for c in extraction)
        assert all(c.input_tokens > 0 and c.output_tokens > 0 for c in calls if not c.cache_hit)
        assert {c.prompt_name for c in extraction} >= {"extract/l3_chain"}
        assert all(c.prompt_version == "1" for c in calls)
        chunks = {c.id: c.text for c in s.exec(select(Chunk)).all()}
        chains = {c.id: c.chunk_id for c in s.exec(select(Chain)).all()}
        for st in s.exec(select(Statement)).all():  # whatever was stored passed the exact-quote check
            assert st.source_quote in chunks[chains[st.chain_id]]
        failed = [c for c in calls if not c.ok]
        assert all(c.error for c in failed)  # each rejection says why, in the ledger
        stored = len(chains) + len(s.exec(select(TestItem)).all()) + len(s.exec(select(Sample)).all())
        assert failed or stored  # the weak teacher produced rejected answers, stored units, or both
        first_calls = sorted((c.prompt_hash, c.ok, c.output_tokens) for c in extraction)

    second = run_llm(corpus, llama_url, tiny_model, "llm2")
    assert second.returncode == first.returncode, second.stderr
    with session_scope(open_run("llm2").db_url) as s:
        extraction = [c for c in s.exec(select(LLMCall)).all() if c.agent == "extractor"]
    # Zero new requests: every reply, rejected ones too, is replayed from the cache, re-asks included.
    assert extraction and all(c.cache_hit and c.cost == 0 for c in extraction)
    assert sorted((c.prompt_hash, c.ok, c.output_tokens) for c in extraction) == first_calls


def test_tester_and_builder_on_a_real_server(llama_url):
    """The KB comes from the offline rules; the item and the samples come from the served model."""
    from pwd_agent.agents.schemas import KBChain, KBStatement
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
    cfg = LLMConfig(backend="openai", base_url=llama_url, model="smollm2", max_tokens=500, max_format_retries=1)
    agents = LLMAgents(StructuredClient(cfg, ResponseCache(Path("llm_cache.sqlite"))))

    take_records()
    item = agents.write_test_item(kb_chain, statements, [], 0)
    samples = agents.write_samples(kb_chain, statements, [], [], 1, 0.6, 0.3)
    records = take_records()
    assert {r.prompt_name for r in records} == {"tests/test_item", "builder/samples"}
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in records)
    if item is not None:  # whatever the model wrote passed the checks: four distinct options, a key
        assert len(set(item.options)) == 4 and item.answer
    for sample in samples:
        assert sample.prompt and sample.answer and set(sample.statement_ids) <= {s.id for s in statements}
    assert item is not None or samples or not all(r.ok for r in records)

    again = agents.write_samples(kb_chain, statements, [], [], 1, 0.6, 0.3)
    repeat = take_records()
    assert again == samples  # the same replies, replayed from the cache without a request
    assert repeat and all(r.cache_hit for r in repeat)
    assert [r.ok for r in repeat] == [r.ok for r in records if r.prompt_name == "builder/samples"]
