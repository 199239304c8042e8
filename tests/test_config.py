"""RunConfig: layering, validation and the messages a user sees."""

from pathlib import Path

import pytest

from pwd_agent.config import RunConfig, load_config, parse_set, save_config
from pwd_agent.errors import ConfigError


def test_yaml_then_set_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loop:\n  goal: 0.7\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["train.epochs=3", "student.target_modules=[\"q_proj\"]"], **{"loop.goal": 0.9})
    assert cfg.train.epochs == 3
    assert cfg.student.target_modules == ["q_proj"]
    assert cfg.loop.goal == 0.9


def test_set_value_is_json_or_string():
    assert parse_set("loop.max_rounds=4") == (["loop", "max_rounds"], 4)
    assert parse_set("corpus.path=docs/x") == (["corpus", "path"], "docs/x")


def test_unknown_key_names_the_key_and_a_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["loop.gaol=0.5"])
    assert "loop.gaol" in err.value.message and "loop.goal" in err.value.hint
    path = tmp_path / "run.yaml"
    path.write_text("trian:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(path)


@pytest.mark.parametrize("goal", [1.5, -0.1])
def test_goal_outside_unit_interval_is_refused(goal):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_config(None, [f"loop.goal={goal}"])


def test_gates_take_booleans_only():
    assert load_config(None, ["gates.on_patch=true"]).gates.on_patch is True
    with pytest.raises(ConfigError, match="gates.after_kb"):
        load_config(None, ["gates.after_kb=sometimes"])


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, ["loop.goal=0.66", "corpus.path=elsewhere"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert RunConfig().config_hash() != cfg.config_hash()


def test_facets_the_offline_rules_cannot_write_are_refused_with_the_fix():
    from pwd_agent.schemas import ITEM_FACETS
    from pwd_agent.config import Facet, RULE_FACETS

    assert set(Facet.__args__) == set(ITEM_FACETS) and RULE_FACETS == tuple(ITEM_FACETS)[:3]
    with pytest.raises(ConfigError, match="offline rules write only.*llm.backend"):
        load_config(None, ['tests.facets=["order","pitfall"]'])
    with pytest.raises(ConfigError, match="twice"):
        load_config(None, ['tests.facets=["order","order"]'])
    cfg = load_config(None, ['tests.facets=["order","pitfall"]', "llm.backend=openai"])
    assert cfg.tests.facets == ["order", "pitfall"]


def test_repair_size_takes_a_rule_name_or_a_positive_count():
    assert load_config(None, []).builder.repair_size == "patches"  # the paper's ratio rule, unchanged
    assert load_config(None, ["builder.repair_size=v1"]).builder.repair_size == "v1"
    assert load_config(None, ["builder.repair_size=v1+patches"]).builder.repair_size == "v1+patches"
    assert load_config(None, ["builder.repair_size=1000"]).builder.repair_size == 1000
    for bad in ("0", "all"):
        with pytest.raises(ConfigError, match="repair_size"):
            load_config(None, [f"builder.repair_size={bad}"])


def test_early_stopping_is_off_by_default_and_needs_the_own_engine():
    cfg = load_config(None, [])
    assert (cfg.train.heldout_share, cfg.train.patience) == (0.0, 1)
    assert load_config(None, ["train.heldout_share=0.1", "train.patience=2", "train.epochs=3"]).train.patience == 2
    with pytest.raises(ConfigError, match="engine=own"):
        load_config(None, ["train.heldout_share=0.1", "train.engine=trl", "train.epochs=3"])
    with pytest.raises(ConfigError, match="train.epochs above 1"):  # one epoch leaves nothing to choose from
        load_config(None, ["train.heldout_share=0.1"])
    with pytest.raises(ConfigError, match="heldout_share"):
        load_config(None, ["train.heldout_share=1"])


@pytest.mark.parametrize("name", ["demo.yaml", "demo-repair.yaml", "budget.yaml", "invented.yaml", "water.yaml"])
def test_the_shipped_example_configs_load_and_name_folders_that_exist(name):
    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "examples" / name)
    assert (root / cfg.corpus.path).is_dir()


def test_every_llm_backend_name_has_a_factory_and_an_unknown_name_is_refused():
    from typing import get_args

    from pwd_agent.config import LLMConfig
    from pwd_agent.llm.backends import BACKENDS, backend_factory

    assert set(get_args(LLMConfig.model_fields["backend"].annotation)) == set(BACKENDS)
    assert all(callable(backend_factory(name)) for name in BACKENDS)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["llm.backend=anthropic"])
    assert "llm.backend" in err.value.message and "'offline' or 'openai'" in err.value.message
