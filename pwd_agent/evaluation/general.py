"""The general-ability guard: a general multiple-choice set scored every round beside the domain
tests, so a repair that teaches the domain by breaking everything else shows up.

`eval.general` is `builtin` (40 short questions on everyday science, arithmetic, language and
geography, written for this project and shipped in pwd_agent/data/general_mc.jsonl, key letters
balanced), a path to a JSONL file of the same form, or `none`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pwd_agent.errors import ConfigError
from pwd_agent.prompting import LETTERS

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "general_mc.jsonl"


@dataclass(frozen=True)
class GeneralItem:
    key: str  # "<source>:<id>", stable across rounds
    question: str
    options: list[str]
    answer: str


def load_general(spec: str) -> list[GeneralItem]:
    if spec in ("", "none"):
        return []
    path = BUILTIN if spec == "builtin" else Path(spec)
    if not path.is_file():
        raise ConfigError(f"eval.general file not found: {path}", "use `builtin`, `none`, or a JSONL of "
                          '{"id", "question", "options", "answer"} lines')
    source = "builtin" if spec == "builtin" else path.stem
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            options, answer = list(row["options"]), str(row["answer"])
            letters = answer.split(",")
            if not 2 <= len(options) <= len(LETTERS) or any(x not in LETTERS[: len(options)] for x in letters):
                raise ValueError(f"answer {answer!r} does not name one of the {len(options)} options")
            items.append(GeneralItem(f"{source}:{row.get('id', n)}", str(row["question"]), options, answer))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} line {n} is not a general item: {exc}",
                              'each line: {"id": 1, "question": "...", "options": ["...", "..."], "answer": "B"}') from None
    return items
