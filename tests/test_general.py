"""The general-ability guard: the shipped set loads and is balanced; bad files are refused clearly;
a drop below the base model is measured against round 0."""

import json
from collections import Counter

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
