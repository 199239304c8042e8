"""Reading a corpus folder and cutting documents into chunks with content hashes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pwd_agent.errors import CorpusError

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*\"'])")


@dataclass(frozen=True)
class RawDocument:
    path: str
    title: str
    text: str


@dataclass(frozen=True)
class RawChunk:
    heading: str
    text: str


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_corpus(path: str | Path, extensions: list[str]) -> list[RawDocument]:
    """All readable text documents under `path`, sorted by path; raises CorpusError when none."""
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"corpus not found: {root}", "set corpus.path (or --corpus) to a folder of .txt/.md files")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if root.is_dir() and not files:
        raise CorpusError(f"corpus folder is empty: {root}", "add .txt or .md documents to it, or point --corpus elsewhere")
    suffixes = {e.lower() for e in extensions}
    docs = [doc for f in files if f.suffix.lower() in suffixes and (doc := _read_text(f))]
    if not docs:
        raise CorpusError(
            f"no readable text in {root} (looked for {', '.join(sorted(suffixes))} files with text in them)",
            "add UTF-8 .txt or .md documents, or change corpus.extensions",
        )
    return docs


def _read_text(path: Path) -> RawDocument | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (UnicodeDecodeError, OSError):
        return None
    if not text:
        return None
    first = text.splitlines()[0]
    match = _HEADING.match(first)
    title = match.group(2).strip() if match else path.stem.replace("_", " ")
    return RawDocument(path=str(path), title=title, text=text)


def chunk_document(text: str, max_chars: int) -> list[RawChunk]:
    """Sections split at Markdown headings; paragraphs packed into chunks of at most `max_chars`."""
    chunks: list[RawChunk] = []
    for heading, paragraphs in _sections(text):
        current: list[str] = []
        for para in paragraphs:
            if current and len("\n\n".join(current + [para])) > max_chars:
                chunks.append(RawChunk(heading, "\n\n".join(current)))
                current = []
            current.append(para)
        if current:
            chunks.append(RawChunk(heading, "\n\n".join(current)))
    return chunks


def _sections(text: str) -> list[tuple[str, list[str]]]:
    sections: list[tuple[str, list[str]]] = [("", [])]
    para: list[str] = []

    def flush() -> None:
        if para:
            sections[-1][1].append(" ".join(line.strip() for line in para))
            para.clear()

    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            flush()
            sections.append((match.group(2).strip(), []))
        elif line.strip():
            para.append(line)
        else:
            flush()
    flush()
    return [(h, ps) for h, ps in sections if ps]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of `text`, so quotes stay exact substrings."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    if start < len(text.rstrip()):
        spans.append((start, len(text.rstrip())))
    return [(s, e) for s, e in spans if text[s:e].strip()]
