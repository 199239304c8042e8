"""Export a run for other tools: the benchmark (JSONL + lm-evaluation-harness tasks), a round's
training data (chat messages, ShareGPT, Alpaca), and the `vllm serve` line for its adapter."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml
from sqlmodel import select

from pwd_agent.errors import ConfigError
from pwd_agent.prompting import choice_prompt_version, render_choice_prompt
from pwd_agent.context import RunContext
from pwd_agent.store import Round, Sample, TestItem, session_scope
from pwd_agent.store.queries import round_samples


def export_run(ctx: RunContext, out: Path, round_id: int | None = None) -> list[Path]:
    """Write everything into `out` (replaced whole, so a failed export leaves the old one intact)."""
    with session_scope(ctx.db_url) as session:
        items = session.exec(select(TestItem).order_by(TestItem.id)).all()
        if not items:
            raise ConfigError(f"run {ctx.run_id} has no test items yet",
                              f"`pwd-agent resume {ctx.run_id}` past build_tests first")
        trained = [r for r in session.exec(select(Round).order_by(Round.id)).all() if r.adapter_path]
        chosen = _pick_round(trained, round_id, ctx.run_id)
        samples = round_samples(session, chosen.id) if chosen else session.exec(
            select(Sample).where(Sample.origin == "v1").order_by(Sample.id)).all()
        benchmark = [_benchmark_row(i) for i in items]
        pairs = [(s.prompt, s.answer) for s in samples]
        adapter = chosen.adapter_path if chosen else None

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        _write_benchmark(staging, benchmark, ctx.run_id, final_dir=out.resolve())
        _write_training(staging, pairs)
        _write_serving(staging, ctx, adapter, chosen.id if chosen else None)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(p for p in out.rglob("*") if p.is_file())


def _pick_round(trained: list[Round], round_id: int | None, run_id: str) -> Round | None:
    if round_id is None:
        return trained[-1] if trained else None
    for r in trained:
        if r.id == round_id:
            return r
    have = ", ".join(str(r.id) for r in trained) or "none yet"
    raise ConfigError(f"round {round_id} of run {run_id} has no trained adapter", f"pick one of: {have}")


def _benchmark_row(item: TestItem) -> dict:
    return {"id": item.id, "split": item.split, "chain_id": item.chain_id, "question": item.question,
            "options": item.options, "answer": item.answer, "prompt": render_choice_prompt(item.question, item.options),
            "prompt_version": choice_prompt_version()}


LM_EVAL_UTILS = '''"""lm-evaluation-harness scoring for tasks exported by pwd-agent: its letter parser and \
exact-set match."""

from pwd_agent.prompting import parse_letters, score


def process_results(doc, results):
    return {"acc": float(score(parse_letters(results[0]), doc["answer"]))}
'''


def _write_benchmark(folder: Path, rows: list[dict], run_id: str, final_dir: Path) -> None:
    """benchmark.jsonl, one file per split, and an lm-eval task per split reading that file."""
    _jsonl(folder / "benchmark.jsonl", rows)
    tasks = folder / "lm_eval"
    tasks.mkdir()
    group = f"pwd_{run_id.replace('-', '_')}"
    for split in ("dev", "holdout"):
        _jsonl(folder / f"benchmark_{split}.jsonl", [r for r in rows if r["split"] == split])
        task = {
            "task": f"{group}_{split}",
            "tag": [group],
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(final_dir / f"benchmark_{split}.jsonl")}},
            "test_split": "test",
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            # The paper's protocol: greedy, at most 15 new tokens, the first line read (until "\n").
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": 15, "do_sample": False},
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1},
        }
        # Scored by pwd-agent's own letter parser and exact-set match (utils.py), so both tools agree.
        text = yaml.safe_dump(task, sort_keys=False) + "process_results: !function utils.process_results\n"
        (tasks / f"{group}_{split}.yaml").write_text(text)
    (tasks / "utils.py").write_text(LM_EVAL_UTILS)


def _write_training(folder: Path, pairs: list[tuple[str, str]]) -> None:
    _jsonl(folder / "train_messages.jsonl", [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]} for p, a in pairs])
    (folder / "train_sharegpt.json").write_text(json.dumps(
        [{"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": a}]} for p, a in pairs], indent=1))
    (folder / "train_alpaca.json").write_text(json.dumps(
        [{"instruction": p, "input": "", "output": a} for p, a in pairs], indent=1))


def _write_serving(folder: Path, ctx: RunContext, adapter: str | None, round_id: int | None) -> None:
    from pwd_agent.student import is_full_model, resolve_student

    if adapter is None:
        text = "# No trained round yet: nothing to serve.\n"
    elif is_full_model(adapter):  # train.method=full: the round's folder is a whole model
        text = (f"# Serve round {round_id}'s fully trained student (its own folder, no base model needed):\n"
                f"vllm serve {Path(adapter).resolve()} --served-model-name {ctx.run_id}-r{round_id}\n"
                f"# then ask for model \"{ctx.run_id}-r{round_id}\" on http://127.0.0.1:8000/v1\n")
    else:
        base = resolve_student(ctx.config.student)
        name = f"{ctx.run_id}-r{round_id}"
        text = (f"# Serve the student with round {round_id}'s LoRA adapter (no merge):\n"
                f"vllm serve {base} --enable-lora --lora-modules {name}={Path(adapter).resolve()}\n"
                f"# then ask for model \"{name}\" on http://127.0.0.1:8000/v1\n")
    (folder / "serve.sh").write_text(text)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
