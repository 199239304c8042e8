"""Bad input: one clear line with a hint, a non-zero exit, and no run folder left behind."""

from pathlib import Path

import pytest

from conftest import cli


def assert_clean_error(result, text: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_missing_corpus():
    assert_clean_error(cli("run", "--corpus", "nowhere"), "corpus not found: nowhere")


def test_empty_corpus_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    assert_clean_error(cli("run", "--corpus", "docs"), "corpus folder is empty")


def test_folder_without_readable_text(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "scan.pdf").write_bytes(b"%PDF")
    assert_clean_error(cli("run", "--corpus", "docs"), "no readable text")


def test_unknown_config_key(tmp_path):
    assert_clean_error(cli("run", "--set", "train.epohcs=2"), "unknown config key 'train.epohcs'")
    (tmp_path / "bad.yaml").write_text("loop:\n  goal: 0.5\n  goal_score: 2\n")
    assert_clean_error(cli("run", "-c", "bad.yaml"), "unknown config key 'loop.goal_score'")


@pytest.mark.parametrize("goal", ["1.2", "-0.5"])
def test_goal_outside_zero_one(goal):
    assert_clean_error(cli("run", "--goal", goal), "between 0 and 1")


def test_resume_unknown_run():
    result = cli("resume", "no-such-run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no run 'no-such-run' in runs/")


def test_list_with_no_runs():
    result = cli("list")
    assert result.returncode == 0 and "no runs in runs/ yet" in result.stdout


def test_config_lists_every_key():
    out = cli("config").stdout
    for key in ("loop.goal", "student.model", "train.epochs", "eval.max_new_tokens", "corpus.path"):
        assert key in out


def test_set_on_a_run_refuses_an_unknown_key_and_changes_nothing(small_corpus):
    from pwd_agent.config import load_config
    from pwd_agent.runs import create_run, open_run

    create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=r"]))
    before = Path("runs/r/config.yaml").read_text()
    result = cli("set", "r", "loop.gaol=0.9")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown config key 'loop.gaol'")
    assert "hint: known keys include: loop.goal" in result.stderr
    assert Path("runs/r/config.yaml").read_text() == before and open_run("r").config.loop.goal == 0.5
    changed = cli("set", "r", "loop.goal=0.9")
    assert changed.returncode == 0 and "loop.goal: 0.5 -> 0.9" in changed.stdout
    assert open_run("r").config.loop.goal == 0.9
    assert cli("review", "r").returncode == 2  # nothing waits: a clear refusal


def test_review_of_an_unknown_run():
    result = cli("review", "nope")
    assert result.returncode == 2 and result.stderr.startswith("error: no run 'nope' in runs/")
