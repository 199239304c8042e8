"""The general-ability guard: a general multiple-choice set scored every round beside the domain
tests, so a repair that teaches the domain by breaking everything else shows up.

`eval.general` is `builtin` (40 short questions on everyday science, arithmetic, language and
geography, written for this project and shipped in pwd_agent/data/general_mc.jsonl, key letters
balanced), a path to a JSONL file of the same form, `none`, or `lm_eval:TASK[,TASK...]`:
lm-evaluation-harness tasks (e.g. `lm_eval:mmlu_high_school_biology,arc_easy`, or tasks of your
own under `eval.lm_eval_include_path`), run with the round's base model and adapter, chat template
applied, each sample stored as a GeneralResult `<task>:<doc_id>`.
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


LM_EVAL = "lm_eval:"
SAMPLE_METRICS = ("acc", "exact_match")  # the per-sample 0/1 metric read from lm-eval's samples


def lm_eval_tasks(spec: str) -> list[str]:
    """The lm-eval task names of an `lm_eval:` spec ([] for any other spec)."""
    if not spec.startswith(LM_EVAL):
        return []
    return [t.strip() for t in spec[len(LM_EVAL):].split(",") if t.strip()]


def task_manager(tasks: list[str], include_path: str | None):
    """lm-eval's task index: only the user's folder when it holds every task named (indexing the
    ~15,000 built-in tasks takes seconds), else the built-in tasks too."""
    from lm_eval.tasks import TaskManager

    if include_path:
        own = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(own.all_tasks):
            return own
    return TaskManager(include_path=include_path)


def check_lm_eval(spec: str, include_path: str | None) -> None:
    """lm-eval is installed and knows every task named (a typo fails now, not after round 0)."""
    import importlib.util

    tasks = lm_eval_tasks(spec)
    if not tasks:
        raise ConfigError(f"eval.general={spec!r} names no task", "e.g. eval.general=lm_eval:arc_easy,mmlu_anatomy")
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError("eval.general runs lm-eval tasks, but lm-eval is not installed",
                          "pip install 'pwd-agent[lmeval]', or eval.general=builtin")
    known = set(task_manager(tasks, include_path).all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=3)
        raise ConfigError(f"unknown lm-eval task {unknown[0]!r}", f"did you mean {', '.join(close)}?" if close else
                          "list them with `lm_eval ls tasks`; tasks of your own go under eval.lm_eval_include_path")


def score_lm_eval(spec: str, include_path: str | None, model_path: str, adapter: str | None, batch_size: int,
                  limit: int | None, dtype: str = "auto") -> list[tuple[str, str, bool]]:
    """(key, raw response, passed) for every sample of the spec's tasks, from lm_eval.simple_evaluate."""
    import lm_eval
    import torch

    from pwd_agent.student import dtype_name, is_full_model

    if is_full_model(adapter):  # train.method=full: the round's own model (its folder holds the tokenizer)
        model_path, adapter = adapter, None
    args = f"pretrained={model_path},dtype={dtype_name(dtype)}"
    if adapter:
        args += f",peft={adapter}"
    tasks = lm_eval_tasks(spec)
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks,
                                  device="cuda" if torch.cuda.is_available() else "cpu",
                                  task_manager=task_manager(tasks, include_path), batch_size=batch_size,
                                  apply_chat_template=True, log_samples=True, limit=limit)
    rows = []
    for task, samples in sorted(out["samples"].items()):
        for sample in samples:
            metric = next((m for m in SAMPLE_METRICS if m in sample), None)
            if metric is None:
                raise ConfigError(f"lm-eval task {task} reports none of {SAMPLE_METRICS} per sample",
                                  "use a multiple-choice or exact-match task as the general guard")
            raw = json.dumps(sample.get("filtered_resps", sample.get("resps")), default=str)[:500]
            rows.append((f"{task}:{sample['doc_id']}", raw, float(sample[metric]) >= 1.0))
    return rows


def load_general(spec: str) -> list[GeneralItem]:
    """The guard items pwd-agent scores itself ([] for `none` and for lm-eval tasks, which lm-eval scores)."""
    if spec in ("", "none") or spec.startswith(LM_EVAL):
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
            raise ConfigError(
                f"{path} line {n} is not a general item: {exc}",
                'each line: {"id": 1, "question": "...", "options": ["...", "..."], "answer": "B"}') from None
    return items
