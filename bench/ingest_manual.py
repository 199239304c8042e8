"""Measure ingest, extract, build_tests and synthesize (offline agents) on a whole folder, e.g. the \
PostgreSQL 15 manual.

Usage:
    apt-get download postgresql-doc-15 && dpkg -x postgresql-doc-15_*.deb /tmp/pgdoc
    python bench/ingest_manual.py /tmp/pgdoc/usr/share/doc/postgresql-doc-15/html [--set k=v ...]

Runs the four nodes in this process on a fresh run under a temporary runs folder and prints one
JSON line: wall time per stage, peak memory (max RSS), store size, documents, chunks, skipped files
by reason, chains, statements, concepts, test items, V1 samples, failed units, and three chains
with their steps (from chunks with numbered lists, when there are any).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.config import load_config
from pwd_agent.nodes.build_tests import build_tests
from pwd_agent.nodes.extract import extract
from pwd_agent.nodes.ingest import ingest
from pwd_agent.nodes.synthesize import synthesize
from pwd_agent.runs import create_run
from pwd_agent.store import Chain, Chunk, Document, Sample, SourceFile, TestItem, WorkUnit, session_scope
from pwd_agent.store.queries import count_rows


def main(folder: str, sets: list[str]) -> dict:
    runs = Path(tempfile.mkdtemp(prefix="pwd-bench-"))
    ctx = create_run(load_config(None, [f"corpus.path={folder}", f"runs_dir={runs}", "run_id=manual", *sets]))
    runtime, state, seconds = Runtime(context=ctx), {}, {}
    for name, node in (("ingest", ingest), ("extract", extract), ("build_tests", build_tests),
                       ("synthesize", synthesize)):
        start = time.perf_counter()
        state = {**state, **node(state, runtime)}
        seconds[name] = round(time.perf_counter() - start, 1)
    with session_scope(ctx.db_url) as s:
        skipped = Counter(r for r in s.exec(select(SourceFile.reason).where(SourceFile.status == "skipped")).all())
        chains = s.exec(select(Chain, Chunk.heading, Document.path).join(Chunk, Chunk.id == Chain.chunk_id)
                        .join(Document, Document.id == Chunk.document_id).order_by(Chain.id)).all()
        numbered = [(c, h, p) for c, h, p in chains if any(line.lstrip()[:2] in {"1.", "2."} for line in
                                                          s.get(Chunk, c.chunk_id).text.splitlines())]
        shown = (numbered or chains)[:: max(1, len(numbered or chains) // 3)][:3]
        result = {
            "folder": folder, "seconds": seconds, "wall_s": round(sum(seconds.values()), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            # with the WAL
            "store_mb": round(sum(f.stat().st_size for f in Path(ctx.run_dir).glob("run.db*")) / 2**20, 1),
            "documents": count_rows(s, Document), "chunks": count_rows(s, Chunk), "skipped": dict(skipped),
            **{k: state["counts"][k] for k in ("chains", "statements", "concepts")},
            "chains_in_chunks_with_numbered_lists": len(numbered),
            "test_items": count_rows(s, TestItem), "v1_samples": count_rows(s, Sample),
            "failed_units": count_rows(s, WorkUnit, WorkUnit.stage == "extract", WorkUnit.error.is_not(None)),
            "examples": [{"source": f"{Path(p).name} / {h}", "process": c.process_name, "steps": c.steps}
                         for c, h, p in shown],
        }
    return result


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = sys.argv[2:]
    print(json.dumps(main(sys.argv[1], [v for k, v in zip(args, args[1:], strict=False) if k == "--set"]),
                     ensure_ascii=False))
