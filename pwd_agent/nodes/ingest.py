"""ingest: convert the corpus, store new documents and their chunks (by content hash), record every file."""

from __future__ import annotations

from langgraph.runtime import Runtime
from sqlmodel import delete, func, select

from pwd_agent.config import CorpusConfig
from pwd_agent.corpus import CorpusScan, chunk_document, content_hash, scan_corpus
from pwd_agent.errors import CorpusError
from pwd_agent.events import emit
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Chunk, Document, SourceFile, session_scope


def ingest(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Read the corpus folder into documents and content-hashed chunks; every file recorded, converted or skipped."""
    ctx = runtime.context
    cfg = ctx.config.corpus
    scan = checked_scan(cfg)  # with on_skip=error this raises before anything is stored
    new = 0
    for doc in scan.documents:
        digest = content_hash(doc.text)
        with session_scope(ctx.db_url) as session:  # one transaction per document: all chunks or none
            if session.exec(select(Document).where(Document.content_hash == digest)).first():
                continue
            row = Document(path=doc.path, title=doc.title, content_hash=digest, n_chars=len(doc.text))
            session.add(row)
            session.flush()
            for i, chunk in enumerate(chunk_document(doc.text, cfg.max_chunk_chars)):
                chunk_digest = content_hash(f"{chunk.heading}\n{chunk.text}")
                if not session.exec(select(Chunk).where(Chunk.content_hash == chunk_digest)).first():
                    session.add(Chunk(document_id=row.id, position=i, heading=chunk.heading, text=chunk.text,
                                      content_hash=chunk_digest, page=chunk.page, anchor=chunk.anchor))
            new += 1
    with session_scope(ctx.db_url) as session:  # this scan's records replace an earlier one's
        session.exec(delete(SourceFile))
        session.add_all(SourceFile(**vars(record)) for record in scan.files)
    with session_scope(ctx.db_url) as session:
        n_docs = session.exec(select(func.count()).select_from(Document)).one()
        n_chunks = session.exec(select(func.count()).select_from(Chunk)).one()
    skipped = scan.skip_summary()
    message = f"{n_docs} documents ({new} new), {n_chunks} chunks" + (f"; {skipped}: {_names(scan)}" if skipped else "")
    emit(ctx.db_url, "ingest", message, level="warning" if skipped else "info",
         documents=n_docs, chunks=n_chunks, skipped=len(scan.skipped))
    return {"counts": {**state.get("counts", {}), "documents": n_docs, "chunks": n_chunks}}


def checked_scan(cfg: CorpusConfig) -> CorpusScan:
    """The corpus scanned; with `corpus.on_skip: error` a skipped file is a CorpusError naming them all."""
    scan = scan_corpus(cfg.path, cfg.extensions, cfg.max_file_mb, cfg.include)
    if scan.skipped and cfg.on_skip == "error":
        raise CorpusError(
            f"{scan.skip_summary()}: " + "; ".join(f"{f.path} ({f.reason}: {f.detail})" for f in scan.skipped[:20])
            + (f"; and {len(scan.skipped) - 20} more" if len(scan.skipped) > 20 else ""),
            "remove or fix those files (or add their suffix to corpus.extensions), "
            "or set corpus.on_skip=warn to go on without them",
        )
    return scan


def _names(scan: CorpusScan, shown: int = 5) -> str:
    names = [f"{f.path} ({f.reason})" for f in scan.skipped[:shown]]
    more = len(scan.skipped) - shown
    return ", ".join(names) + (f" and {more} more (pwd-agent status)" if more > 0 else "")
