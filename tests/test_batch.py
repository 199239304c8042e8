"""Batch mode (llm.batch) against a local server with the files and batches endpoints: round trip,
validation and live re-asks, partly failed, expired and failed batches, the batch price, and a
SIGKILLed run that resumes by polling the same batch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import BaseModel
from sqlmodel import select

from pwd_agent.config import LLMConfig, load_config
from pwd_agent.errors import ConfigError
from pwd_agent.llm.cache import ResponseCache
from pwd_agent.llm.openai_compat import StructuredClient, take_records
from pwd_agent.prompting import PromptFile
from pwd_agent.store import LLMBatch, session_scope

from servers.batch_endpoint import BatchEndpoint, chat_reply

PROMPT = PromptFile("test/echo", "3", ("topic",), "Tell me about {{ topic }} as JSON.")


class Fact(BaseModel):
    name: str
    steps: int


class Scripted(BatchEndpoint):
    """Answers `{"name": TOPIC, "steps": 1}`; `bad` topics get an invalid first answer (a re-ask
    gets a valid one), `failing` topics fail as batch rows."""

    def __init__(self, delay_s: float = 0.0):
        self.bad: set[str] = set()
        self.failing: set[str] = set()
        super().__init__(delay_s)

    @staticmethod
    def topic(body: dict) -> str:
        return re.search(r"about (\w+)", body["messages"][1]["content"]).group(1)

    def complete(self, body):
        topic = self.topic(body)
        reask = len(body["messages"]) > 2
        content = '{"name": "%s"}' % topic if topic in self.bad and not reask else \
            json.dumps({"name": topic, "steps": 1})
        return chat_reply(body["model"], content, body["messages"][1]["content"])

    def fail_row(self, body):
        return self.topic(body) in self.failing


@pytest.fixture
def server():
    endpoint = Scripted()
    yield endpoint
    endpoint.close()


def batch_client(url: str, tmp_path, cache: str = "cache.sqlite", **overrides) -> StructuredClient:
    cfg = LLMConfig(backend="openai", model="m", base_url=url, response_format="json_object", timeout_s=5,
                    max_retries=1, batch=True, batch_window_s=0.2, batch_poll_s=0.05,
                    price_input_per_m=2.0, price_output_per_m=8.0, **overrides)
    return StructuredClient(cfg, ResponseCache(tmp_path / cache), batch_store=f"sqlite:///{tmp_path}/run.db")


def ask_all(llm: StructuredClient, topics: list[str]) -> dict[str, tuple]:
    """Each topic asked in its own thread, as map_units runs units: topic -> (answer, ledger rows)."""
    def one(topic):
        take_records()
        return llm.ask("extractor", PROMPT, {"topic": topic}, Fact), take_records()

    with ThreadPoolExecutor(len(topics)) as pool:
        return dict(zip(topics, pool.map(one, topics)))


def stored_batches(tmp_path) -> list[LLMBatch]:
    with session_scope(f"sqlite:///{tmp_path}/run.db") as s:
        return s.exec(select(LLMBatch).order_by(LLMBatch.id)).all()


def test_batch_round_trip_validated_as_live_and_priced_at_the_batch_rate(server, tmp_path):
    server.bad = {"gamma"}
    topics = ["alpha", "beta", "gamma", "delta", "eps"]
    results = ask_all(batch_client(server.url, tmp_path), topics)
    assert {t: r[0] for t, r in results.items()} == {t: Fact(name=t, steps=1) for t in topics}
    assert len(server.created) == 1 and sorted(server.sent_ids()) == sorted(set(server.sent_ids()))
    assert len(server.sent_ids()) == 5
    # The invalid batch reply went back with its error, live (a re-ask: the answer and the error appended).
    assert len(server.live) == 1 and len(server.live[0]["messages"]) == 4
    assert "steps" in server.live[0]["messages"][-1]["content"]
    assert server.bodies[server.sent_ids()[0]]["response_format"]["type"] == "json_object"
    for topic, (_, rows) in results.items():
        first = rows[0]
        assert first.batch and first.input_tokens > 0
        live_price = (first.input_tokens * 2.0 + first.output_tokens * 8.0) / 1e6
        assert first.cost == pytest.approx(0.5 * live_price)
        assert first.ok == (topic != "gamma")
    reask = results["gamma"][1]
    assert len(reask) == 2 and not reask[1].batch and reask[1].ok
    assert reask[1].cost == pytest.approx((reask[1].input_tokens * 2.0 + reask[1].output_tokens * 8.0) / 1e6)
    (row,) = stored_batches(tmp_path)
    assert (row.status, row.n_failed, sorted(row.custom_ids)) == ("completed", 0, sorted(server.sent_ids()))
    # Every batch reply is in the cache: asked again, nothing is sent.
    again = ask_all(batch_client(server.url, tmp_path), topics)
    assert all(rows[0].cache_hit for _, rows in again.values())
    assert len(server.created) == 1 and len(server.live) == 1


def test_the_same_conversation_from_two_units_is_one_batch_row_priced_once(server, tmp_path):
    llm = batch_client(server.url, tmp_path)

    def one(topic):
        take_records()
        return llm.ask("extractor", PROMPT, {"topic": topic}, Fact), take_records()

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, ["alpha", "alpha", "beta"]))
    assert [answer.name for answer, _ in results] == ["alpha", "alpha", "beta"]
    assert len(server.sent_ids()) == 2 and not server.live
    alpha = sorted((rows[0] for _, rows in results[:2]), key=lambda r: r.cost)
    assert alpha[0].cache_hit and alpha[0].cost == 0 and not alpha[1].cache_hit and alpha[1].cost > 0


def test_partly_failed_batch_sends_only_the_failed_rows_live(server, tmp_path):
    server.failing = {"beta"}
    results = ask_all(batch_client(server.url, tmp_path), ["alpha", "beta", "gamma"])
    assert all(answer is not None for answer, _ in results.values())
    assert [server.topic(b) for b in server.live] == ["beta"] and len(server.live[0]["messages"]) == 2
    (beta,) = results["beta"][1]
    assert not beta.batch and beta.ok and "sent live" in beta.error and "HTTP 500" in beta.error
    assert all(rows[0].batch for t, (_, rows) in results.items() if t != "beta")
    (row,) = stored_batches(tmp_path)
    assert (row.status, row.n_failed) == ("completed", 1)


def test_expired_batch_keeps_its_answers_and_sends_the_rest_live(server, tmp_path):
    server.expire_keep = 2
    topics = ["alpha", "beta", "gamma", "delta"]
    results = ask_all(batch_client(server.url, tmp_path), topics)
    assert all(answer is not None for answer, _ in results.values())
    kept = {server.topic(server.bodies[cid]) for cid in server.sent_ids()[:2]}
    assert {server.topic(b) for b in server.live} == set(topics) - kept
    assert all("expired" in rows[0].error for t, (_, rows) in results.items() if t not in kept)
    (row,) = stored_batches(tmp_path)
    assert (row.status, row.n_failed) == ("expired", 2)


def test_failed_batch_falls_back_live(server, tmp_path):
    server.fail_batch = True
    results = ask_all(batch_client(server.url, tmp_path), ["alpha", "beta"])
    assert all(answer is not None and not rows[0].batch for answer, rows in results.values())
    assert "scripted batch failure" in results["alpha"][1][0].error and len(server.live) == 2


@pytest.mark.parametrize("created", [True, False])
def test_a_kill_between_create_and_store_sends_nothing_twice(server, tmp_path, created):
    """The stored row has the input file but no batch id: the batch is found on the server by its
    file (created=True) or created then from the same file (created=False), never sent anew."""
    from openai import OpenAI

    raw = OpenAI(base_url=server.url, api_key="x")
    body = {"model": "m", "messages": [{"role": "system", "content": "s"},
                                       {"role": "user", "content": "Tell me about alpha as JSON."}]}
    line = json.dumps({"custom_id": "k1", "method": "POST", "url": "/v1/chat/completions", "body": body})
    upload = raw.files.create(file=("r.jsonl", line.encode()), purpose="batch")
    if created:
        raw.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    with session_scope(f"sqlite:///{tmp_path}/run.db") as s:
        s.add(LLMBatch(input_file_id=upload.id, custom_ids=["k1"]))
    reply = batch_client(server.url, tmp_path).batcher.submit("k1", body).result(timeout=10)
    assert json.loads(reply.content) == {"name": "alpha", "steps": 1}
    assert list(server.created) == ["batch-1"] and server.batches["batch-1"]["input_file_id"] == upload.id
    assert server.log.count(("POST", "/v1/files")) == 1
    (row,) = stored_batches(tmp_path)
    assert (row.batch_id, row.status) == ("batch-1", "completed")


def test_a_stopped_run_releases_its_waiting_units_and_the_next_client_polls_the_same_batch(server, tmp_path):
    """Ctrl-C or an error in the stage (map_units calls abandon_all): the unit threads stop waiting,
    the batch stays stored, and a later client answers from it without sending anything again."""
    from pwd_agent.llm.batch import BatchAbandoned, abandon_all

    server.delay_s = 60
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(ask_all, batch_client(server.url, tmp_path), ["alpha", "beta"])
        deadline = time.time() + 10
        while not server.polls.get("batch-1"):
            assert time.time() < deadline
            time.sleep(0.02)
        abandon_all()
        with pytest.raises(BatchAbandoned):
            waiting.result(timeout=5)
    assert [row.status for row in stored_batches(tmp_path)] == ["submitted"]
    server.delay_s = 0  # (the first client's poller may still cache the replies: the next one has its own cache)
    results = ask_all(batch_client(server.url, tmp_path, cache="cache2.sqlite"), ["alpha", "beta"])
    assert all(answer is not None and rows[0].batch for answer, rows in results.values())
    assert list(server.created) == ["batch-1"] and not server.live
    assert [row.status for row in stored_batches(tmp_path)] == ["completed"]


def test_a_lost_create_reply_finds_the_batch_instead_of_going_live(server, tmp_path):
    server.lose_create_reply = True
    results = ask_all(batch_client(server.url, tmp_path), ["alpha", "beta"])
    assert all(answer is not None and rows[0].batch for answer, rows in results.values())
    assert list(server.created) == ["batch-1"] and not server.live
    assert [(row.batch_id, row.status) for row in stored_batches(tmp_path)] == [("batch-1", "completed")]


def test_batch_with_the_offline_backend_names_the_fix():
    with pytest.raises(ConfigError, match="llm.backend=openai"):
        load_config(sets=["llm.batch=true"])


# ---- the whole bulk stages, SIGKILLed while a batch is pending ------------------------------------
class BatchTeacher(BatchEndpoint):
    """The scripted teacher's answers (tests/servers/scripted_teacher.py), live and in batches."""

    def complete(self, body):
        from servers.scripted_teacher import answer

        prompt = body["messages"][1]["content"]
        return chat_reply(body["model"], json.dumps(answer(prompt)), prompt)


@pytest.mark.slow
def test_kill_while_a_batch_is_pending_then_resume_sends_nothing_twice(tiny_model, small_corpus):
    from pwd_agent.runs import open_run
    from pwd_agent.store import LLMCall, TestItem

    teacher = BatchTeacher(delay_s=1.5)
    try:
        args = ["run", "--corpus", str(small_corpus), "--run-id", "b", "-q",
                "--set", "llm.backend=openai", "--set", f"llm.base_url={teacher.url}", "--set", "llm.model=scripted",
                "--set", "llm.batch=true", "--set", "llm.batch_poll_s=0.1", "--set", "llm.batch_window_s=0.3",
                "--set", "llm.price_input_per_m=2.0", "--set", "llm.price_output_per_m=8.0",
                "--set", "tests.items_per_chain=2", "--set", "gates.after_tests=true",
                "--set", f"student.model={tiny_model}"]
        run = subprocess.Popen([sys.executable, "-m", "pwd_agent", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not teacher.polls.get("batch-1"):  # created, its id stored (the client stores before polling)
            assert time.time() < deadline and run.poll() is None, run.stderr.read() if run.poll() else "no batch"
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert teacher.batches["batch-1"]["status"] == "in_progress" and len(teacher.created) == 1
        pending = list(teacher.created["batch-1"])

        resumed = subprocess.run([sys.executable, "-m", "pwd_agent", "resume", "b", "-q"], capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 6, resumed.stderr[-3000:]  # paused at the after_tests gate
        # The server's own log: every custom_id ran in one batch exactly once, the killed batch was
        # polled again (not sent again), and no live request repeated a batch request.
        sent = teacher.sent_ids()
        assert len(sent) == len(set(sent)) and set(pending) <= set(sent)
        assert teacher.created["batch-1"] == pending and teacher.polls["batch-1"] > 1
        conversations = [json.dumps(teacher.bodies[cid]["messages"]) for cid in sent]
        conversations += [json.dumps(body["messages"]) for body in teacher.live]
        assert len(conversations) == len(set(conversations))
        assert len(teacher.created) >= 4  # chains, statements, concepts, test items
        with session_scope(open_run("b").db_url) as s:
            calls = s.exec(select(LLMCall)).all()
            assert s.exec(select(TestItem)).first() is not None
            batches = s.exec(select(LLMBatch)).all()
        assert {b.batch_id for b in batches} == set(teacher.created) and all(b.status == "completed" for b in batches)
        batched = [c for c in calls if c.batch]
        assert {c.agent for c in batched} == {"extractor", "tester"} and not [c for c in calls if c.cache_hit]
        assert len(batched) == len(sent)  # one ledger row per batch request, the killed batch's included
        assert all(c.cost > 0 for c in batched)

        # The third bulk stage (V1 samples) in this process, past the gate; the Debugger's backend stays live.
        from types import SimpleNamespace

        from pwd_agent.agents.runner import make_backend, workers_for
        from pwd_agent.nodes.synthesize import synthesize

        ctx = open_run("b")
        ctx.config.gates.after_tests = False
        assert make_backend(ctx).client.batcher is None and workers_for(make_backend(ctx), ctx.config) == 4
        assert workers_for(make_backend(ctx, bulk=True), ctx.config) == 256
        before = len(teacher.created)
        synthesize({}, SimpleNamespace(context=ctx))
        assert len(teacher.created) == before + 1 and len(teacher.sent_ids()) == len(set(teacher.sent_ids()))
        with session_scope(ctx.db_url) as s:
            builder = [c for c in s.exec(select(LLMCall)).all() if c.agent == "builder"]
        assert builder and all(c.batch for c in builder) and len(builder) == len(teacher.created[f"batch-{before + 1}"])
    finally:
        teacher.close()
