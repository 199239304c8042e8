"""The general-ability guard: the shipped set loads and is balanced; bad files are refused clearly;
a drop below the base model is measured against round 0."""

import json
from collections import Counter
from pathlib import Path

import pytest

from pwd_agent.errors import ConfigError
from pwd_agent.evaluation.general import load_general
from pwd_agent.nodes.decide import general_drop


def test_builtin_set_is_forty_balanced_single_answer_items():
    items = load_general("builtin")
    assert len(items) == 40 and len({i.key for i in items}) == 40
    assert Counter(i.answer for i in items) == {"A": 10, "B": 10, "C": 10, "D": 10}  # no letter prior wins
    assert all(len(set(i.options)) == 4 for i in items)
    assert load_general("none") == []


def test_a_user_file_is_read_and_a_bad_line_is_named(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text(json.dumps({"id": 7, "question": "2+2?", "options": ["3", "4"], "answer": "B"}) + "\n")
    [item] = load_general(str(good))
    assert item.key == "mine:7" and item.options == ["3", "4"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "2+2?", "options": ["3", "4"], "answer": "C"}) + "\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_general(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_general(str(tmp_path / "missing.jsonl"))


def test_general_drop_is_against_the_base_model():
    scores = [{"round": 0, "general": 0.5}, {"round": 1, "general": 0.45}, {"round": 2, "general": 0.3}]
    assert general_drop(scores[:1]) is None
    assert general_drop(scores) == pytest.approx(0.2)
    assert general_drop([{"round": 0, "general": None}, {"round": 1, "general": 0.1}]) is None


def tiny_lm_eval_task(folder: Path) -> Path:
    """A six-question multiple-choice lm-eval task on a local JSON file (no hub)."""
    folder.mkdir()
    rows = [{"question": f"Which word names the colour number {i}?", "choices": ["red", "green", "blue", "grey"],
             "label": i % 4} for i in range(6)]
    (folder / "guard.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tiny_guard.yaml").write_text(
        "task: tiny_guard\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'guard.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1\n")
    return folder


def test_an_lm_eval_task_name_lm_eval_does_not_know_is_refused_with_the_nearest(tmp_path):
    """What `run` calls before it makes a run folder: a typo names the task it meant."""
    from pwd_agent.evaluation.general import check_lm_eval

    tasks = tiny_lm_eval_task(tmp_path / "tasks")
    with pytest.raises(ConfigError, match="unknown lm-eval task 'tiny_gaurd'") as typo:
        check_lm_eval("lm_eval:tiny_gaurd", str(tasks))
    assert "did you mean tiny_guard" in typo.value.hint


@pytest.mark.slow
@pytest.mark.extended  # the default run keeps the refusal above, and the shipped guard in test_loop's two rounds
def test_lm_eval_tasks_as_the_general_guard(tiny_model, small_corpus, tmp_path):
    """eval.general=lm_eval:TASK runs lm-evaluation-harness each round with the round's adapter;
    every sample is stored and the round's general accuracy is their mean."""
    import subprocess
    import sys

    from sqlmodel import select

    from pwd_agent.runs import open_run
    from pwd_agent.store import GeneralResult, Round, session_scope

    tasks = tiny_lm_eval_task(tmp_path / "tasks")

    done = subprocess.run([sys.executable, "-m", "pwd_agent", "run", "--corpus", str(small_corpus), "--goal", "0.99",
                           "-q", "--run-id", "lmg", "--set", f"student.model={tiny_model}",
                           "--set", "loop.max_rounds=1", "--set", f"eval.lm_eval_include_path={tasks}",
                           "--set", "eval.general=lm_eval:tiny_guard"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    with session_scope(open_run("lmg").db_url) as s:
        for r in s.exec(select(Round)).all():
            rows = s.exec(select(GeneralResult).where(GeneralResult.round_id == r.id)).all()
            assert sorted(g.item_key for g in rows) == [f"tiny_guard:{i}" for i in range(6)]
            assert r.general_acc == pytest.approx(sum(g.passed for g in rows) / 6)
            assert all(g.raw.startswith("[") for g in rows)  # lm-eval's per-choice log-likelihoods
