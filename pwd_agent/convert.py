"""Files to Markdown: PDF (pypdf), HTML (lxml + markdownify), DOCX (mammoth), text in any common encoding.

Each converter keeps the structure the chunker reads: headings as `#` lines (with `{#anchor}` from
HTML ids), ordered lists as `1.` items, tables as Markdown tables, code as fenced blocks, and PDF
pages as `<!-- page N -->` lines. A file that cannot be converted raises Unconvertible with a reason
the ingest record keeps; docs/architecture.md says why these libraries (measured).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BINARY_PROBE = 8192  # bytes looked at for NULs before a file is called binary
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# Elements that are navigation or page furniture, not content: by tag, by ARIA role, and by a class
# or id token (DocBook's navheader/navfooter, the usual site templates).
_BOILERPLATE_TAGS = ("script", "style", "noscript", "template", "nav", "aside", "footer")
_BOILERPLATE_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary")
_BOILERPLATE_TOKENS = {"nav", "navbar", "navheader", "navfooter", "navigation", "breadcrumb", "breadcrumbs", "sidebar",
                       "menu", "toc", "skip-link", "skiplink", "site-header", "site-footer", "footer", "cookie-banner"}


class Unconvertible(Exception):
    """A file that yields no text: `kind` is the skip reason (unreadable, empty), the message the detail."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class Converted:
    markdown: str
    converter: str  # e.g. "pdf:pypdf", "html:markdownify", "text:cp1252"
    title: str | None = None  # the document's own title (HTML <title>, PDF metadata), when it has one


CONVERTERS = {".pdf": "pdf", ".html": "html", ".htm": "html", ".xhtml": "html", ".docx": "docx"}


def convert_file(path: Path) -> Converted:
    """The file as Markdown; files of other suffixes are read as text. Raises Unconvertible."""
    data = path.read_bytes()
    kind = CONVERTERS.get(path.suffix.lower(), "text")
    try:
        result = {"pdf": pdf_to_markdown, "html": html_file_to_markdown, "docx": docx_to_markdown,
                  "text": text_file}[kind](data)
    except Unconvertible:
        raise
    except Exception as exc:  # a library's parse error on a damaged file: a named skip, not a crash
        raise Unconvertible("unreadable", f"{kind} could not be read: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not result.markdown.strip():
        raise Unconvertible("empty",
                            "no text layer (a scanned PDF needs OCR first)" if kind == "pdf" else "no text in it")
    return result


# ---- text ---------------------------------------------------------------------------------
def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): a BOM, else strict UTF-8, else charset-normalizer's best guess, where a tie
    goes to cp1252 (short Western text decodes cleanly as several code pages; cp1252 is the
    commonest, and what browsers read for latin-1)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding), encoding.replace("-sig", "")
    if b"\x00" in data[:BINARY_PROBE]:
        raise Unconvertible("unreadable", "binary content (NUL bytes), not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise Unconvertible("unreadable", "binary content or an unknown encoding")
    tied = [m for m in matches
            if (m.percent_chaos, m.percent_coherence) == (best.percent_chaos, best.percent_coherence)]
    chosen = next((m for m in tied if m.encoding == "cp1252"), best)
    return str(chosen), chosen.encoding


def text_file(data: bytes) -> Converted:
    text, encoding = decode(data)
    return Converted(text.replace("\r\n", "\n").replace("\r", "\n"), f"text:{encoding}")


# ---- HTML ---------------------------------------------------------------------------------
def html_file_to_markdown(data: bytes) -> Converted:
    text, _ = decode(data)
    return html_to_markdown(text)


def html_to_markdown(html: str, converter: str = "html:markdownify") -> Converted:
    """The page's main content as Markdown: navigation and page furniture dropped, each heading
    tagged with the nearest id (its own, an anchor in it, or its section's) as `{#id}`."""
    import lxml.html
    from markdownify import markdownify

    html = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)  # lxml refuses a str with an encoding declaration
    if not html.strip():
        return Converted("", converter)
    root = lxml.html.document_fromstring(html)
    title = (root.findtext(".//title") or "").strip() or None
    _drop_boilerplate(root)
    main = next(iter(root.xpath("//main | //*[@role='main']") or root.xpath("//article") or root.xpath("//body")), root)
    for heading in main.xpath(".//h1 | .//h2 | .//h3 | .//h4 | .//h5 | .//h6"):
        anchor = _anchor(heading, main)
        if anchor and heading.text_content().strip():
            marker = lxml.html.Element("span")
            marker.text = f" {{#{anchor}}}"
            heading.append(marker)
    markdown = markdownify(lxml.html.tostring(main, encoding="unicode"), heading_style="ATX", bullets="-",
                           strip=["a", "img"], escape_asterisks=False, escape_underscores=False,
                           table_infer_header=True)
    return Converted(re.sub(r"\n{3,}", "\n\n", markdown).strip() + "\n", converter, title)


def _drop_boilerplate(root) -> None:
    tags = " | ".join(f"//{t}" for t in _BOILERPLATE_TAGS)
    roles = " or ".join(f"@role='{r}'" for r in _BOILERPLATE_ROLES)
    for element in root.xpath(f"{tags} | //*[{roles}]"):
        element.drop_tree()
    # A page header outside the article is site furniture; an article's own header holds its title.
    for element in root.xpath("//header[not(ancestor::article) and not(ancestor::main)]"):
        element.drop_tree()
    for element in root.xpath("//*[@class or @id]"):
        tokens = set(f"{element.get('class', '')} {element.get('id', '')}".lower().split())
        keep = element.tag in ("html", "body", "main", "article") or element.getparent() is None
        if tokens & _BOILERPLATE_TOKENS and not keep:
            element.drop_tree()


def _anchor(heading, main) -> str | None:
    if heading.get("id"):
        return heading.get("id")
    inner = heading.xpath(".//a[@id or @name]")
    if inner:
        return inner[0].get("id") or inner[0].get("name")
    for ancestor in heading.iterancestors():
        if ancestor is main or ancestor.tag == "body":
            return ancestor.get("id") if ancestor is main else None
        if ancestor.get("id") and ancestor.tag in ("section", "div", "article"):
            return ancestor.get("id")
    return None


# ---- DOCX ---------------------------------------------------------------------------------
def docx_to_markdown(data: bytes) -> Converted:
    """Word's headings, numbered lists and tables through mammoth's HTML, then the HTML path."""
    import io

    import mammoth

    html = mammoth.convert_to_html(io.BytesIO(data)).value
    return html_to_markdown(f"<html><body>{html}</body></html>", "docx:mammoth")


# ---- PDF ----------------------------------------------------------------------------------
def pdf_to_markdown(data: bytes) -> Converted:
    """Each page's text after a `<!-- page N -->` line; the PDF's outline (bookmarks), where it
    has one, marks its titles on their pages as headings."""
    import io
    import logging

    import pypdf

    # pypdf logs each repair of a damaged file as a warning; the ingest record names what matters.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise Unconvertible("unreadable", "the PDF is encrypted with a password")
    outline = _outline(reader)
    pages = []
    for number, page in enumerate(reader.pages, 1):
        titles = {_squash(title): depth for title, page_index, depth in outline if page_index == number - 1}
        lines = []
        for line in (page.extract_text() or "").splitlines():
            depth = titles.pop(_squash(line), None)
            lines.append(f"{'#' * min(depth + 1, 6)} {line.strip()}" if depth is not None else line)
        text = re.sub(r"(?<=[a-z])-\n(?=[a-z])", "", "\n".join(lines))  # words hyphenated across lines
        pages.append(f"<!-- page {number} -->\n{text.strip()}")
    metadata_title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    body = "\n\n".join(pages)
    return Converted(body if re.search(r"\S", re.sub(r"<!-- page \d+ -->", "", body)) else "", "pdf:pypdf",
                     str(metadata_title).strip() or None if metadata_title else None)


def _outline(reader) -> list[tuple[str, int, int]]:
    """(title, page index, depth) of every outline entry pypdf can place on a page."""
    found = []

    def walk(entries, depth):
        for entry in entries:
            if isinstance(entry, list):
                walk(entry, depth + 1)
                continue
            try:
                page_index = reader.get_destination_page_number(entry)
            except Exception:  # an outline entry pointing nowhere: no heading from it
                continue
            if page_index is not None and page_index >= 0:
                found.append((str(entry.title), page_index, depth))

    try:
        walk(reader.outline, 0)
    except Exception:  # a broken outline leaves the text without headings, not unread
        return []
    return found


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()
