"""ingest: read the corpus, store new documents and their chunks (by content hash)."""

from __future__ import annotations

from langgraph.runtime import Runtime
from sqlmodel import func, select

from pwd_agent.corpus import chunk_document, content_hash, read_corpus
from pwd_agent.events import emit
from pwd_agent.runs import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Chunk, Document, session_scope


def ingest(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    cfg = ctx.config.corpus
    docs = read_corpus(cfg.path, cfg.extensions)
    new = 0
    for doc in docs:
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
                    session.add(Chunk(document_id=row.id, position=i, heading=chunk.heading, text=chunk.text, content_hash=chunk_digest))
            new += 1
    with session_scope(ctx.db_url) as session:
        n_docs = session.exec(select(func.count()).select_from(Document)).one()
        n_chunks = session.exec(select(func.count()).select_from(Chunk)).one()
    emit(ctx.db_url, "ingest", f"{n_docs} documents ({new} new), {n_chunks} chunks", documents=n_docs, chunks=n_chunks)
    return {"counts": {**state.get("counts", {}), "documents": n_docs, "chunks": n_chunks}}
