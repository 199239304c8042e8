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
        stored = len(chains) + len(s.exec(select(TestItem)).all()) + len(s.exec(select(Sample)).all())
        assert failed or stored  # the weak teacher produced rejected answers, stored units, or both
        valid_before = {c.prompt_hash for c in extraction if c.ok}
        failed_before = {c.prompt_hash for c in extraction if not c.ok} - valid_before

    second = run_llm(corpus, llama_url, tiny_model, "llm2")
    assert second.returncode == first.returncode, second.stderr
    with session_scope(open_run("llm2").db_url) as s:
        extraction = [c for c in s.exec(select(LLMCall)).all() if c.agent == "extractor"]
    assert {c.prompt_hash for c in extraction if c.cache_hit} == valid_before  # every valid answer from cache
    assert {c.prompt_hash for c in extraction if not c.cache_hit} <= failed_before  # only failures asked again
