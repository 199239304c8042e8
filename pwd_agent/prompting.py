"""The multiple-choice prompt shared by evaluation and choice samples, and letter parsing."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

LETTERS = "ABCD"
def shipped_prompts() -> Path:
    """The prompt files: inside the installed package (the wheel maps the repository's prompts/
    into pwd_agent/prompts), else the checkout's top-level prompts/ (an editable install)."""
    packaged = Path(str(resources.files("pwd_agent") / "prompts"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


PROMPTS_DIR = shipped_prompts()
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
        return _compiled(self.template).render(**values)


@lru_cache(maxsize=256)
def _compiled(template: str):
    """A prompt's template compiled once: compiling it on every call cost about a millisecond of CPU."""
    return _jinja().from_string(template)


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


def balanced_order(is_key: list[bool], answers: Counter, rng: random.Random) -> list[int]:
    """The order of the options (a permutation of their indexes) whose key set is the one used least
    so far, then whose letters are the least used; ties broken by `rng`. `answers` counts the key
    sets of the items placed before ("A,C": 3, ...). Keeping every key set equally frequent keeps
    the best constant answer near 1 / (number of sets)."""
    letters = Counter(x for answer, n in answers.items() for x in answer.split(",") for _ in range(n))
    orders = list(itertools.permutations(range(len(is_key))))
    rng.shuffle(orders)

    def cost(order) -> tuple[int, int]:
        keys = [LETTERS[pos] for pos, i in enumerate(order) if is_key[i]]
        return answers[",".join(keys)], sum(letters[x] for x in keys)

    return list(min(orders, key=cost))


def place_letters(draft, answers: Counter, rng: random.Random):
    """A test item's options moved to the letters that keep key sets (and then letters) most even
    across the benchmark (`answers`: the key sets of the items stored before it). Done in code,
    after the agent wrote the item, so items can be written concurrently and placed in a fixed order."""
    order = balanced_order([kind == "key" for kind in draft.option_kinds], answers, rng)
    return draft.model_copy(update={
        "options": [draft.options[i] for i in order],
        "option_kinds": [draft.option_kinds[i] for i in order],
        "option_statements": [draft.option_statements[i] for i in order],
        "answer": letters_of([pos for pos, i in enumerate(order) if draft.option_kinds[i] == "key"]),
    })


def letters_of(indexes: list[int]) -> str:
    return ",".join(LETTERS[i] for i in sorted(set(indexes)))


# The answer grammar (the first non-empty line, whole): an optional "Answer:" / "The answer is",
# then one or more capital letters A-D, each optionally in brackets or bold, separated by commas,
# spaces, "and", "&" or "/", then an optional full stop. Nothing else may stand on that line:
# "B because D is wrong" or "D) Right after A" commit to no answer, so a stray capital in prose
# is never credited. Explanations go on the following lines.
_PREFIX = r"(?P<prefix>(?i:(?:the\s+)?(?:correct\s+)?answers?(?:\s+(?:is|are))?\s*[:\-]?\s*)?)"
_LETTER = r"[(\[]?\**([A-D])\**[)\]]?"
_SEPARATOR = r"(?:\s*(?:,|&|/|\band\b)\s*|\s+)"
_ANSWER_LINE = re.compile(rf"^{_PREFIX}{_LETTER}(?:{_SEPARATOR}{_LETTER})*\s*\.?$")


def parse_letters(text: str) -> str:
    """The set of letters a completion commits to, as sorted 'A,C'; '' when its first non-empty
    line is not an answer in the grammar above ('A', 'A,C', 'A, C', 'A and C', '(B)', 'B.',
    'Answer: A,C', 'The answer is C')."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    match = _ANSWER_LINE.match(first)
    if match is None:
        return ""
    letters = re.findall(r"[A-D]", first[match.end("prefix"):])
    return ",".join(sorted(set(letters)))


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
