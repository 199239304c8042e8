"""The agent backends by name (`llm.backend`): a table of "module:factory", imported only when a run uses it.

Like lm-eval's model registry: naming a backend costs nothing, and the openai client (or any other
backend's dependencies) is imported only by the run that picks it."""

from __future__ import annotations

import importlib
from typing import Callable

# Each factory takes (ctx, bulk) and returns the backend; its keys are config.LLMConfig.backend's names.
BACKENDS = {
    "offline": "pwd_agent.llm.offline:from_context",
    "openai": "pwd_agent.llm.llm_agents:from_context",
}


def backend_factory(name: str) -> Callable:
    """The factory of the backend called `name`, imported now."""
    module, _, attr = BACKENDS[name].partition(":")  # config.py allows only these names, so no KeyError here
    return getattr(importlib.import_module(module), attr)


def item_style(tests) -> tuple[tuple[str, ...], bool, bool, bool]:
    """The tests.* settings every backend writes items under: facets, one key, same-process distractors,
    and order options that all open on the key's first step (tests.distractors=same_anchor, itself same-process)."""
    return (tuple(tests.facets), tests.one_key, tests.distractors in ("same_process", "same_anchor"),
            tests.distractors == "same_anchor")
