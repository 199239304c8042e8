"""Per-call work done once: a response schema's JSON Schema and a prompt's compiled template are made
once per process (bench/agent_throughput.py: about 1-1.5 ms of CPU a call at 32 in flight), and give
what making them every call gave."""

import jinja2

from pwd_agent.llm.llm_agents import ChainAnswer, ItemAnswer, SamplesAnswer
from pwd_agent.llm.openai_compat import json_schema
from pwd_agent.prompting import load_prompt


def test_the_schema_is_made_once_and_each_caller_gets_its_own_copy():
    for schema in (ChainAnswer, ItemAnswer, SamplesAnswer):
        first = json_schema(schema)
        assert first == schema.model_json_schema()
        first["title"] = "changed"
        first["properties"].clear()
        assert json_schema(schema) == schema.model_json_schema()


def test_a_compiled_prompt_renders_what_compiling_it_each_time_rendered():
    prompt = load_prompt("extract/l3_chain")
    values = {"title": "The Mill", "heading": "Grinding", "chunk": "First, the grain is sorted. Then it is ground."}
    fresh = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(prompt.template)
    assert prompt.render(**values) == prompt.render(**values) == fresh.render(**values)
    other = load_prompt("extract/l2_statements")
    assert other.render(chunk="c", steps="0. a\n1. b") != prompt.render(**values)
