"""The multiple-choice prompt shared by evaluation and choice samples, and letter parsing."""

from __future__ import annotations

import random
import re
from collections import Counter
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

    def render(self, **values: object) -> str:
        """Jinja with StrictUndefined: a declared or used variable that is missing is an error."""
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise KeyError(f"prompt {self.tag} needs variables {missing}")
        return _jinja().from_string(self.template).render(**values)


@lru_cache(maxsize=1)
def _jinja():
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@lru_cache(maxsize=None)
def load_prompt(name: str, prompts_dir: Path = PROMPTS_DIR) -> PromptFile:
    """Read prompts/<name>.txt: `# key: value` header lines (other `#` lines are comments), then
    a Jinja template."""
    path = Path(prompts_dir) / f"{name}.txt"
    if not path.is_file():
        from pwd_agent.errors import ConfigError

        raise ConfigError(f"prompt file not found: {path}", "set llm.prompts_dir to a copy of the prompts/ folder")
    lines = path.read_text().splitlines()
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


def balanced_order(is_key: list[bool], letter_counts: Counter, rng: random.Random, tries: int = 8) -> list[int]:
    """Among a few shuffles of four options, the one that keeps key letters most even across items."""
    best, best_cost = list(range(len(is_key))), None
    for _ in range(tries):
        order = list(range(len(is_key)))
        rng.shuffle(order)
        counts = letter_counts.copy()
        counts.update(LETTERS[pos] for pos, i in enumerate(order) if is_key[i])
        cost = sum(v * v for v in counts.values())
        if best_cost is None or cost < best_cost:
            best, best_cost = order, cost
    return best


def place_letters(draft, letter_counts: Counter, rng: random.Random):
    """A test item's options shuffled to the letters that keep keys most even across the benchmark
    (`letter_counts`: the key letters of the items stored before it). Done in code, after the
    agent wrote the item, so items can be written concurrently and placed in a fixed order."""
    order = balanced_order([kind == "key" for kind in draft.option_kinds], letter_counts, rng)
    return draft.model_copy(update={
        "options": [draft.options[i] for i in order],
        "option_kinds": [draft.option_kinds[i] for i in order],
        "option_statements": [draft.option_statements[i] for i in order],
        "answer": letters_of([pos for pos, i in enumerate(order) if draft.option_kinds[i] == "key"]),
    })


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


def check_prompts(prompts_dir: Path = PROMPTS_DIR) -> list[tuple[str, str]]:
    """(prompt tag, 'ok' or the error) for every prompt file, rendered with fixture values; a
    template that uses a variable it does not declare fails here, not in a run."""
    results = []
    for path in sorted(Path(prompts_dir).rglob("*.txt")):
        name = path.relative_to(prompts_dir).with_suffix("").as_posix()
        try:
            prompt = load_prompt(name, Path(prompts_dir))
            text = prompt.render(**{v: f"<{v}>" for v in prompt.variables})
            unused = [v for v in prompt.variables if f"<{v}>" not in text]
            results.append((prompt.tag, f"unused variables {unused}" if unused else "ok"))
        except Exception as exc:  # report every broken prompt, not just the first
            results.append((name, f"{type(exc).__name__}: {exc}"))
    return results
