"""The multiple-choice prompt shared by evaluation and choice samples, and letter parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LETTERS = "ABCD"
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_HEADER = re.compile(r"^#\s*(\w+):\s*(.*)$")


@dataclass(frozen=True)
class PromptFile:
    name: str
    version: str
    variables: tuple[str, ...]
    template: str

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, **values: str) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise KeyError(f"prompt {self.tag} needs variables {missing}")
        return self.template.format(**{v: values[v] for v in self.variables})


@lru_cache(maxsize=None)
def load_prompt(name: str, prompts_dir: Path = PROMPTS_DIR) -> PromptFile:
    """Read prompts/<name>.txt: `# key: value` header lines (other `#` lines are comments), then the template."""
    lines = (prompts_dir / f"{name}.txt").read_text().splitlines()
    meta, body = {}, []
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            body = lines[i:]
            break
        if match := _HEADER.match(line):  # other '#' lines are comments
            meta[match.group(1)] = match.group(2).strip()
    variables = tuple(v.strip() for v in meta.get("variables", "").split(",") if v.strip())
    return PromptFile(meta.get("name", name), meta.get("version", "0"), variables, "\n".join(body).strip())


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def render_choice_prompt(question: str, options: list[str]) -> str:
    """The user turn of a multiple-choice item, for evaluation and for choice training samples."""
    return load_prompt("eval/letters").render(question=question, options=format_options(options))


def choice_prompt_version() -> str:
    return load_prompt("eval/letters").tag


def letters_of(indexes: list[int]) -> str:
    return ",".join(LETTERS[i] for i in sorted(set(indexes)))


_ANSWER_PREFIX = re.compile(r"^\s*(the\s+)?(correct\s+)?(answer|answers|options?)\s*(is|are)?\s*[:\-]?\s*", re.I)
_LETTER_RUN = re.compile(r"^[\s(\[]*([A-D])[)\].]?(?:\s*(?:,|and|&|/)?\s*([A-D])(?![a-z])[)\].]?)*", re.I)


def parse_letters(text: str) -> str:
    """The set of letters a completion commits to, as sorted 'A,C'; '' when there is none.

    Reads the first line only, after an optional 'Answer:' prefix, and accepts lists such as
    'A, C', 'A and C', '(B)' or 'B. because...'. Letters inside words are never read.
    """
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = _ANSWER_PREFIX.sub("", first)
    found = re.findall(r"(?<![A-Za-z])([A-D])(?![A-Za-z])", first.split(". ")[0] if ". " in first else first)
    if not found or not _LETTER_RUN.match(first):
        return ""
    return ",".join(sorted(set(found)))


def score(predicted: str, key: str) -> bool:
    """The paper's exact-set match."""
    return bool(predicted) and set(predicted.split(",")) == set(key.split(","))
