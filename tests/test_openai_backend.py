"""The OpenAI-compatible client against a local HTTP server this test controls: re-asks, retries, faults."""

from __future__ import annotations

import socket
import time

import pytest
from pydantic import BaseModel

from pwd_agent.config import LLMConfig
from pwd_agent.llm.cache import ResponseCache
from pwd_agent.llm.openai_compat import (
    BudgetExceededError, EndpointUnavailableError, StructuredClient, take_records,
)
from pwd_agent.prompting import PromptFile

from servers.chat_endpoint import ChatEndpoint, completion

PROMPT = PromptFile("test/echo", "3", ("topic",), "Tell me about {{ topic }} as JSON.")


class Fact(BaseModel):
    name: str
    steps: int


class Endpoint(ChatEndpoint):
    """Answers from a script: ("ok", content), (status,), ("sleep", s), ("reset",), ("refuse_schema",)."""

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        super().__init__()

    def reply(self, body, handler):
        self.requests.append(body)
        action = self.script.pop(0) if self.script else ("ok", '{"name": "x", "steps": 1}')
        if action[0] == "reset":
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if action[0] == "sleep":
            time.sleep(action[1])
            action = ("ok", '{"name": "late", "steps": 1}')
        if action[0] == "refuse_schema":  # like llama.cpp's own server before it learnt json_schema
            refused = body.get("response_format", {}).get("type") == "json_schema"
            action = (500,) if refused else ("ok", '{"name": "fallback", "steps": 2}')
        if action[0] == "ok":
            self.send(handler, 200, completion(body["model"], action[1], 100, 20))
        else:
            self.send(handler, action[0], {"error": {"message": "scripted failure"}})


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(StructuredClient, "_backoff", lambda self, attempt: None)
    take_records()


def client(url: str, tmp_path=None, **overrides) -> StructuredClient:
    cfg = LLMConfig(backend="openai", model="m", base_url=url,
                    response_format=overrides.pop("response_format", "json_object"),
                    timeout_s=overrides.pop("timeout_s", 5), max_retries=overrides.pop("max_retries", 2), **overrides)
    cache = ResponseCache(tmp_path / "cache.sqlite") if tmp_path else None
    return StructuredClient(cfg, cache)


def test_valid_answer_is_parsed_cached_and_ledgered(endpoint, tmp_path):
    endpoint.script = [("ok", '```json\n{"name": "floc", "steps": 4}\n```')]
    llm = client(endpoint.url, tmp_path, price_input_per_m=1.0, price_output_per_m=2.0)
    assert llm.ask("extractor", PROMPT, {"topic": "floc"}, Fact) == Fact(name="floc", steps=4)
    again = llm.ask("extractor", PROMPT, {"topic": "floc"}, Fact)
    assert again == Fact(name="floc", steps=4) and len(endpoint.requests) == 1  # the cache answered
    first, second = take_records()
    assert (first.cache_hit, first.input_tokens, first.output_tokens, first.ok) == (False, 100, 20, True)
    assert first.cost == pytest.approx(100 * 1.0 / 1e6 + 20 * 2.0 / 1e6)
    assert (second.cache_hit, second.cost) == (True, 0.0)
    assert (first.prompt_name, first.prompt_version, first.model) == ("test/echo", "3", "m")
    assert endpoint.requests[0]["response_format"]["type"] == "json_object"
    assert endpoint.requests[0]["response_format"]["schema"]["required"] == ["name", "steps"]


def test_invalid_answer_is_sent_back_with_its_error(endpoint, tmp_path):
    endpoint.script = [("ok", '{"name": "floc"}'), ("ok", "not json at all"), ("ok", '{"name": "floc", "steps": 3}')]
    llm = client(endpoint.url, tmp_path, max_format_retries=2)
    assert llm.ask("extractor", PROMPT, {"topic": "floc"}, Fact) == Fact(name="floc", steps=3)
    assert len(endpoint.requests) == 3
    feedback = endpoint.requests[1]["messages"][-1]["content"]
    assert "steps" in feedback and "Field required" in feedback
    assert endpoint.requests[1]["messages"][-2] == {"role": "assistant", "content": '{"name": "floc"}'}
    assert [r.ok for r in take_records()] == [False, False, True]


def test_semantic_check_exhausts_retries_then_records_a_failure(endpoint, tmp_path):
    endpoint.script = [("ok", '{"name": "wrong", "steps": 1}')] * 3
    llm = client(endpoint.url, tmp_path, max_format_retries=2)
    check = lambda fact: None if fact.name in "the chunk text" else f"name {fact.name!r} is not in the chunk"  # noqa: E731
    assert llm.ask("extractor", PROMPT, {"topic": "x"}, Fact, check) is None
    assert len(endpoint.requests) == 3 and "is not in the chunk" in endpoint.requests[2]["messages"][-1]["content"]
    assert all(not r.ok for r in take_records())
    # A repeat replays the same rejected replies and re-asks from the cache: no request is made twice.
    assert llm.ask("extractor", PROMPT, {"topic": "x"}, Fact, check) is None
    assert len(endpoint.requests) == 3
    replayed = take_records()
    assert len(replayed) == 3 and all(r.cache_hit and not r.ok for r in replayed)
    assert len({r.prompt_hash for r in replayed}) == 1  # one unit, three turns
    # Transport failures are never cached: the next ask goes to the endpoint.
    endpoint.script = [(500,), ("ok", '{"name": "chunk", "steps": 1}')]
    assert llm.ask("extractor", PROMPT, {"topic": "y"}, Fact, check).name == "chunk"


@pytest.mark.parametrize("fault", [(429,), (500,), (503,), ("reset",), ("sleep", 2.0)])
def test_transient_faults_are_retried(endpoint, fault):
    endpoint.script = [fault, ("ok", '{"name": "after", "steps": 2}')]
    llm = client(endpoint.url, timeout_s=1.0)
    assert llm.ask("extractor", PROMPT, {"topic": "t"}, Fact) == Fact(name="after", steps=2)
    assert len(endpoint.requests) == 2


def test_persistent_5xx_stops_cleanly(endpoint):
    endpoint.script = [(500,)] * 3
    with pytest.raises(EndpointUnavailableError) as err:
        client(endpoint.url, max_retries=2).ask("extractor", PROMPT, {"topic": "t"}, Fact)
    assert "failed 3 times" in err.value.message and "pwd-agent resume" in err.value.hint


def test_connection_refused_stops_with_a_hint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(EndpointUnavailableError, match="APIConnectionError") as err:
        client(f"http://127.0.0.1:{port}/v1", max_retries=1).ask("extractor", PROMPT, {"topic": "t"}, Fact)
    assert "llm.base_url" in err.value.hint


def test_auto_mode_falls_back_from_json_schema(endpoint):
    endpoint.script = [("refuse_schema",), ("refuse_schema",), ("ok", '{"name": "b", "steps": 1}')]
    llm = client(endpoint.url, response_format="auto")
    assert llm.ask("extractor", PROMPT, {"topic": "a"}, Fact) == Fact(name="fallback", steps=2)
    assert [r.get("response_format", {}).get("type") for r in endpoint.requests] == ["json_schema", "json_object"]
    assert llm.mode == "json_object"  # kept for the rest of the run
    llm.ask("extractor", PROMPT, {"topic": "b"}, Fact)
    assert endpoint.requests[-1]["response_format"]["type"] == "json_object"


def test_no_response_format_puts_the_schema_in_the_prompt(endpoint):
    client(endpoint.url, response_format="none").ask("extractor", PROMPT, {"topic": "a"}, Fact)
    request = endpoint.requests[0]
    assert "response_format" not in request and '"steps"' in request["messages"][0]["content"]


def test_max_cost_stops_before_the_call_that_would_pass_it(endpoint):
    llm = client(endpoint.url, price_input_per_m=1000.0, price_output_per_m=1000.0, max_cost=0.45, max_tokens=100)
    llm.ask("extractor", PROMPT, {"topic": "a"}, Fact)  # costs 0.12
    llm.ask("extractor", PROMPT, {"topic": "b"}, Fact)  # 0.24
    llm.ask("extractor", PROMPT, {"topic": "c"}, Fact)  # 0.36
    with pytest.raises(BudgetExceededError, match="llm.max_cost"):
        llm.ask("extractor", PROMPT, {"topic": "d"}, Fact)  # 0.36 + estimate (about 0.13) > 0.45
    assert len(endpoint.requests) == 3


@pytest.mark.parametrize("text, clean", [("1. Flocs grow", "Flocs grow"), ("B) Flocs grow", "Flocs grow"),
                                         ("(c) Flocs grow", "Flocs grow"),
                                         ("Type 2. flocs grow", "Type 2. flocs grow")])
def test_option_labels_from_the_model_are_dropped(text, clean):
    from pwd_agent.llm.llm_agents import strip_label

    assert strip_label(text) == clean
