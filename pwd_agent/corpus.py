"""Reading a corpus folder (every file accounted for) and cutting documents into chunks with content hashes."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pwd_agent.convert import CONVERTERS, Unconvertible, convert_file
from pwd_agent.errors import CorpusError

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)(?:\s+\{#([^}\s]+)\})?\s*#*\s*$")
_LINE = re.compile(r"[^\n]+")
_PAGE = re.compile(r"^<!-- page (\d+) -->$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*+•])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*\"'])")
# The schemas' bound on one sentence (schemas.Sentence): longer sentences are cut into
# pieces that fit, at a clause or word boundary, before any agent sees them.
MAX_SENTENCE_CHARS = 500
SKIP_REASONS = ("unsupported type", "over max_file_mb", "unreadable", "empty", "duplicate content")


@dataclass(frozen=True)
class RawDocument:
    path: str
    title: str
    text: str
    converter: str = "text:utf-8"


@dataclass(frozen=True)
class RawChunk:
    heading: str
    text: str
    page: int | None = None
    anchor: str | None = None


@dataclass(frozen=True)
class FileRecord:
    """What became of one file: converted, or skipped with a reason (one of SKIP_REASONS) and its detail."""

    path: str
    status: str  # converted | skipped
    n_bytes: int
    reason: str | None = None
    detail: str | None = None
    converter: str | None = None
    n_chars: int = 0


@dataclass
class CorpusScan:
    documents: list[RawDocument] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)

    @property
    def skipped(self) -> list[FileRecord]:
        return [f for f in self.files if f.status == "skipped"]

    def skip_summary(self) -> str:
        """e.g. '3 files skipped (2 unsupported type, 1 unreadable)', or '' when none was."""
        counts = Counter(f.reason for f in self.skipped)
        if not counts:
            return ""
        parts = ", ".join(f"{counts[r]} {r}" for r in SKIP_REASONS if counts[r])
        return f"{sum(counts.values())} files skipped ({parts})"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_corpus(path: str | Path, extensions: list[str], max_file_mb: float | None = None,
                include: list[str] | None = None) -> list[RawDocument]:
    """All convertible documents under `path`, sorted by path; raises CorpusError when none."""
    return scan_corpus(path, extensions, max_file_mb, include).documents


def _included(relative: str, include: list[str] | None) -> bool:
    """Whether a file's path relative to the corpus folder matches one of the glob patterns."""
    return include is None or any(fnmatch.fnmatchcase(relative, pattern) for pattern in include)


def scan_corpus(path: str | Path, extensions: list[str], max_file_mb: float | None = None,
                include: list[str] | None = None) -> CorpusScan:
    """Every file under `path` (hidden files and folders aside, and those no `include` pattern
    matches) converted or skipped with its reason; raises CorpusError when the path is missing or
    no file yields text."""
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"corpus not found: {root}", "set corpus.path (or --corpus) to a folder of documents")
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and _included(p.relative_to(root).as_posix(), include))
    if root.is_dir() and not files:
        if include and include != ["*"]:
            raise CorpusError(f"corpus folder has no files matching {include}: {root}",
                              "widen corpus.include, or point --corpus elsewhere")
        raise CorpusError(f"corpus folder is empty: {root}", "add documents to it, or point --corpus elsewhere")
    suffixes = {e.lower() for e in extensions}
    scan, seen = CorpusScan(), {}
    for file in files:
        record, doc = _read_file(file, suffixes, max_file_mb)
        if doc is not None:
            digest = content_hash(doc.text)
            if digest in seen:
                record = FileRecord(str(file), "skipped", record.n_bytes, "duplicate content",
                                    f"same text as {seen[digest]}", record.converter, record.n_chars)
                doc = None
            else:
                seen[digest] = str(file)
                scan.documents.append(doc)
        scan.files.append(record)
    if not scan.documents:
        raise CorpusError(
            f"no readable text in {root} (looked for {', '.join(sorted(suffixes))} files with text in them; "
            f"{scan.skip_summary() or 'none found'})",
            "add documents of those types, or change corpus.extensions",
        )
    return scan


def _read_file(path: Path, suffixes: set[str], max_file_mb: float | None) -> tuple[FileRecord, RawDocument | None]:
    size = path.stat().st_size
    skip = lambda reason, detail: (FileRecord(str(path), "skipped", size, reason, detail), None)  # noqa: E731
    if path.suffix.lower() not in suffixes:
        known = "" if path.suffix.lower() not in CONVERTERS else " (a known type: add it to corpus.extensions)"
        return skip("unsupported type", f"'{path.suffix or path.name}' is not in corpus.extensions{known}")
    if max_file_mb is not None and size > max_file_mb * 2**20:
        return skip("over max_file_mb", f"{size / 2**20:.1f} MB > corpus.max_file_mb={max_file_mb:g}")
    try:
        converted = convert_file(path)
    except Unconvertible as exc:
        return skip(exc.kind, str(exc))
    except OSError as exc:
        return skip("unreadable", f"{type(exc).__name__}: {exc}")
    text = converted.markdown.strip()
    title = _title(text) or converted.title or path.stem.replace("_", " ")
    doc = RawDocument(path=str(path), title=title, text=text, converter=converted.converter)
    return FileRecord(str(path), "converted", size, converter=converted.converter, n_chars=len(text)), doc


def _title(text: str) -> str | None:
    """The document's first line when it is a heading."""
    for line in text.splitlines():
        if _PAGE.match(line) or not line.strip():
            continue
        match = _HEADING.match(line)
        return match.group(2).strip() if match else None
    return None


# ---- chunks -------------------------------------------------------------------------------
@dataclass
class _Section:
    heading: str
    anchor: str | None
    page: int | None
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (kind, text): prose | list | table | code


def chunk_document(text: str, max_chars: int) -> list[RawChunk]:
    """Sections split at Markdown headings (and PDF page marks); blocks packed into chunks of at
    most `max_chars`. Prose longer than that is split between sentences, lists between items,
    tables between rows (header repeated); a code block stays whole."""
    chunks: list[RawChunk] = []
    for section in _sections(text):
        current: list[str] = []
        for piece in (p for kind, block in section.blocks for p in _fit(kind, block, max_chars)):
            if current and len("\n\n".join(current + [piece])) > max_chars:
                chunks.append(RawChunk(section.heading, "\n\n".join(current), section.page, section.anchor))
                current = []
            current.append(piece)
        if current:
            chunks.append(RawChunk(section.heading, "\n\n".join(current), section.page, section.anchor))
    return chunks


def _sections(text: str) -> list[_Section]:
    sections = [_Section("", None, None)]
    kind, lines = "", []

    def flush() -> None:
        nonlocal kind
        if lines:
            joiner = " " if kind == "prose" else "\n"
            sections[-1].blocks.append((kind, joiner.join(x.strip() if kind == "prose" else x.rstrip() for x in lines)))
            lines.clear()
        kind = ""

    for line in text.splitlines():
        if kind == "code":
            lines.append(line)
            if _FENCE.match(line) and line.strip() == line.strip()[:3] * (len(line.strip()) // 3):
                flush()
            continue
        heading, page = _HEADING.match(line), _PAGE.match(line.strip())
        if heading or page:
            flush()
            last = sections[-1]
            sections.append(_Section(heading.group(2).strip(), heading.group(3), last.page) if heading
                            else _Section(last.heading, last.anchor, int(page.group(1))))
        elif _FENCE.match(line):
            flush()
            kind = "code"
            lines.append(line)
        elif not line.strip():
            flush()
        elif line.lstrip().startswith("|"):
            if kind != "table":
                flush()
            kind = "table"
            lines.append(line)
        elif _LIST_ITEM.match(line):
            if kind != "list":
                flush()
            kind = "list"
            lines.append(line)
        elif kind == "list":  # a continuation of the item above (indented or lazy)
            lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
        else:
            if kind != "prose":
                flush()
            kind = "prose"
            lines.append(line)
    flush()
    return [s for s in sections if s.blocks]


def _fit(kind: str, block: str, max_chars: int) -> list[str]:
    """The block as pieces of at most `max_chars` (a code block whole)."""
    if len(block) <= max_chars or kind == "code":
        return [block]
    if kind == "prose":
        units = [block[s:e] for s, e in split_sentences(block)]
        return _pack(units, max_chars, " ")
    lines = block.split("\n")
    head = (lines[:2] if kind == "table" and len(lines) > 2 and set(lines[1].replace("|", "").strip()) <= set("-: ")
            else [])
    return ["\n".join(head + [p]) if head else p
            for p in _pack(lines[len(head):], max_chars - len("\n".join(head)), "\n")]


def _pack(units: list[str], max_chars: int, joiner: str) -> list[str]:
    pieces, current = [], ""
    for unit in units:
        if current and len(current) + len(joiner) + len(unit) > max_chars:
            pieces.append(current)
            current = unit
        else:
            current = f"{current}{joiner}{unit}" if current else unit
    return pieces + [current] if current else pieces


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of `text`, so quotes stay exact substrings. A line ends
    a sentence (list items, table rows), a list marker is not part of its item's sentence, fenced
    code holds no sentences, and a sentence over MAX_SENTENCE_CHARS is cut into pieces that fit."""
    spans = []
    for start, end in _prose_ranges(text):
        for line in _LINE.finditer(text, start, end):
            cursor = (marker.end() if (marker := _LIST_ITEM.match(line.group())) else 0) + line.start()
            for match in _SENTENCE_END.finditer(text, cursor, line.end()):
                spans.append((cursor, match.start()))
                cursor = match.end()
            spans.append((cursor, line.end()))
    out = []
    for s, e in spans:
        while e > s and text[e - 1].isspace():
            e -= 1
        while s < e and text[s].isspace():
            s += 1
        if e > s:
            out.extend(_cut(text, s, e))
    return out


def _prose_ranges(text: str) -> list[tuple[int, int]]:
    """(start, end) of the text outside fenced code blocks."""
    ranges, start, fence = [], 0, False
    for match in re.finditer(r"^[ \t]*(```|~~~).*$", text, re.M):
        if not fence:
            ranges.append((start, match.start()))
        start, fence = match.end(), not fence
    if not fence:
        ranges.append((start, len(text)))
    return [(s, e) for s, e in ranges if e > s]


def _cut(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The span as pieces of at most MAX_SENTENCE_CHARS, cut after '; ', ', ' or a space."""
    pieces = []
    while end - start > MAX_SENTENCE_CHARS:
        window = text[start : start + MAX_SENTENCE_CHARS]
        cut = max(window.rfind("; "), window.rfind(", "))
        cut = cut + 1 if cut > MAX_SENTENCE_CHARS // 3 else window.rfind(" ")
        cut = cut if cut > 0 else MAX_SENTENCE_CHARS
        pieces.append((start, start + cut))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    return pieces + [(start, end)] if end > start else pieces
