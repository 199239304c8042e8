"""`resume` runs under the saved config; a change must be named with --set, and some keys never change."""

import pytest
import yaml

from pwd_agent.config import load_config
from pwd_agent.errors import ConfigError
from pwd_agent.runs import create_run, open_run, resume_config


@pytest.fixture
def started(small_corpus):
    return create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=r1"]))


def edit_saved(ctx, section: str, key: str, value) -> None:
    path = ctx.run_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text(yaml.safe_dump(data))


def test_unchanged_config_resumes_as_is(started):
    ctx, changes = resume_config(open_run("r1"), [])
    assert changes == [] and ctx.config == started.config


def test_a_hand_edited_config_is_refused_with_the_set_to_use(started):
    edit_saved(started, "loop", "goal", 0.9)
    with pytest.raises(ConfigError) as err:
        resume_config(open_run("r1"), [])
    assert "loop.goal: 0.5 -> 0.9" in err.value.message
    assert "pwd-agent resume r1 --set loop.goal=0.9" in err.value.hint


def test_set_on_resume_is_applied_saved_and_reported(started):
    ctx, changes = resume_config(open_run("r1"), ["loop.goal=0.8", "train.epochs=2"])
    assert sorted(changes) == [("loop.goal", 0.5, 0.8), ("train.epochs", 1.0, 2.0)]
    assert ctx.config.loop.goal == 0.8
    again, none = resume_config(open_run("r1"), [])  # the override is now what the run runs under
    assert none == [] and again.config.loop.goal == 0.8


@pytest.mark.parametrize("assignment", ["student.lora_r=4", "tests.items_per_chain=4", "corpus.max_chunk_chars=900"])
def test_keys_the_store_depends_on_cannot_change(started, assignment):
    with pytest.raises(ConfigError, match="cannot change in a started run"):
        resume_config(open_run("r1"), [assignment])
    assert open_run("r1").config == started.config  # nothing was written


def test_a_bad_override_is_refused_before_anything_is_written(started):
    with pytest.raises(ConfigError, match="loop.goal"):
        resume_config(open_run("r1"), ["loop.goal=2"])
    assert open_run("r1").config.loop.goal == 0.5
