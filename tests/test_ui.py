"""`pwd-agent ui` with Starlette's TestClient on fixed stores: every route, the token, the 403s.
The run-driving writes start the CLI's own commands; here `_spawn` records them instead."""

import json

import pytest
from sqlmodel import select

pytest.importorskip("starlette")
pytest.importorskip("multipart")

from starlette.testclient import TestClient  # noqa: E402

from pwd_agent.config import load_config  # noqa: E402
from pwd_agent.runs import create_run  # noqa: E402
from pwd_agent.store import (  # noqa: E402
    ConfigChange, Diagnosis, Event, ItemResult, LLMCall, Patch, Round, Run, Sample, session_scope,
)
from pwd_agent.ui import app as ui_app  # noqa: E402

from test_status import add_items  # noqa: E402

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture
def fixed(small_corpus):
    """A finished two-round run: items, rounds with flips, events of several nodes and levels, a patch."""
    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=fixed", "loop.goal=0.8"]))
    with session_scope(ctx.db_url) as s:
        add_items(s, dev=["A", "A", "B,C", "A,B,C,D"], holdout=["B", "C,D"])
        s.add(Round(id=0, status="evaluated", scorer="letters", dev_acc=0.1, holdout_acc=0.125, general_acc=0.25))
        s.add(Round(id=1, status="evaluated", scorer="letters", n_train=50, train_loss=1.2341, dev_acc=0.3,
                    holdout_acc=0.5, fixed=8, broken=1, gain_p=0.0196))
        s.add(Round(id=2, status="evaluated", scorer="letters", n_train=60, n_patch=2, dev_acc=0.5, holdout_acc=1.0,
                    fixed=1, broken=0, gain_p=0.5))
        s.flush()
        for rid, passes in ((1, [False, False]), (2, [True, True])):
            for item_id, passed in zip((5, 6), passes):
                s.add(ItemResult(round_id=rid, item_id=item_id, prompt_version="v", raw="A", predicted="A",
                                 passed=passed))
        s.add(LLMCall(agent="builder", prompt_name="b", prompt_version="1", prompt_hash="h", model="m",
                      input_tokens=10, output_tokens=5, cost=0.25))
        s.add(Diagnosis(id=1, round_id=1, item_id=1, kind="untaught", evidence={"rule": "no exposure"}))
        s.flush()
        s.add(Patch(id=1, diagnosis_id=1, target_round=2, n_samples=1))
        s.flush()
        s.add(Sample(origin="patch", chain_id=1, kind="qa", prompt="What comes after a?", answer="b comes next.",
                     patch_id=1))
        s.add(Event(node="train", message="step 10/20 loss 1.5", level="info", data={"done": 10, "total": 20}))
        s.add(Event(node="train", message="a debug line", level="debug"))
        s.add(Event(node="evaluate", message="holdout 1.000 (key sk-abcdefghijklmnop1234)", level="warning"))
        s.add(Run(run_id="fixed", status="finished", stop_reason="max_rounds", goal_met=False))
    return ctx


def client(read_only: bool = False, token: str | None = TOKEN) -> TestClient:
    return TestClient(ui_app.create_app("runs", read_only=read_only, token=token), base_url="http://127.0.0.1:8765")


def logged_in() -> TestClient:
    c = client()
    assert c.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
    return c


@pytest.fixture
def spawned(monkeypatch):
    """The CLI commands the page would start, recorded."""
    calls = []

    def spawn(settings, args, run_dir, run_id):
        calls.append(args)
        return f"pid 1 drives run {run_id}"

    monkeypatch.setattr(ui_app, "_spawn", spawn)
    return calls


def test_runs_page_lists_state_best_goal_rounds_cost(fixed):
    page = client().get("/")
    assert page.status_code == 200
    assert "finished (max_rounds)" in page.text and ">1.000<" in page.text  # best holdout score
    assert "0.800 holdout" in page.text and "2 / 3" in page.text and "$0.2500" in page.text


def test_run_page_shows_rounds_baselines_p_values_log_and_filters(fixed):
    page = client().get("/runs/fixed")
    assert page.status_code == 200
    text = page.text
    assert 'id="rounds"' in text and "chance" in text and 'dev always "A"' in text and "0.067" in text
    assert "0.020" in text and "0.500" in text  # the paired p of rounds 1 and 2 (dev)
    assert "repair round 2 vs round 1, holdout: 2 fixed, 0 broken, p = 0.25" in text
    assert "step 10/20 loss 1.5" in text and "a debug line" not in text  # info and up by default
    assert "sk-abcdefghijklmnop1234" not in text and "[redacted]" in text
    debug = client().get("/runs/fixed?level=debug&node=train").text
    assert "a debug line" in debug and "holdout 1.000" not in debug
    warning = client().get("/runs/fixed?level=warning").text
    assert "holdout 1.000" in warning and "step 10/20" not in warning
    assert client().get("/runs/nope").status_code == 404


def test_summary_fragment_and_the_event_stream(fixed):
    c = client()
    fragment = c.get("/runs/fixed/summary")
    assert fragment.status_code == 200 and 'id="rounds"' in fragment.text and "<html" not in fragment.text
    with session_scope(fixed.db_url) as s:
        first = s.exec(select(Event.id).order_by(Event.id)).first()
    body = c.get(f"/runs/fixed/stream?follow=0&after={first}&level=debug").text
    messages = [json.loads(line[6:])["message"] for line in body.splitlines() if line.startswith("data: {")]
    assert messages == ["a debug line", "holdout 1.000 (key [redacted])"]
    body = c.get("/runs/fixed/stream?follow=0&node=evaluate").text
    assert [json.loads(line[6:])["node"] for line in body.splitlines() if line.startswith("data: {")] == ["evaluate"]
    assert "event: tick" in body


def test_kb_coverage_blame_and_plots(fixed):
    c = client()
    kb = c.get("/runs/fixed/kb")
    assert kb.status_code == 200 and "chain 1: p" in kb.text and "/runs/fixed/items/1" in kb.text
    coverage = c.get("/runs/fixed/coverage")
    assert coverage.status_code == 200 and "untaught statements" in coverage.text
    blame = c.get("/runs/fixed/blame?item=1")
    assert blame.status_code == 200 and "round 1 diagnosis: untaught" in blame.text and "patch 1:" in blame.text
    assert "round 1 diagnosis: untaught" in c.get("/runs/fixed/items/1").text
    assert c.get("/runs/fixed/blame?item=99").status_code == 400
    png = c.get("/runs/fixed/plots/accuracy.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert c.get("/runs/fixed/plots/nothing.png").status_code == 404


WRITES = [("/runs/fixed/pause", {}), ("/runs/fixed/resume", {}), ("/runs/fixed/set", {"goal": "0.9"}),
          ("/runs/fixed/review", {"action": "approve"}), ("/launch", {"config": "x.yaml"})]


def test_every_write_without_the_token_is_refused_with_403(fixed, spawned):
    for c in (client(), client(token="another-token")):
        for path, data in WRITES:
            refused = c.post(path, data=data, headers={"X-PWD-Token": "wrong"})
            assert refused.status_code == 403 and "needs the token" in refused.text, path
    assert client().post("/login", data={"token": "wrong"}).status_code == 403
    c = logged_in()
    for path, data in WRITES:  # logged in, but from another site
        assert c.post(path, data=data, headers={"Origin": "http://evil.example"}).status_code == 403, path
    read_only = client(read_only=True)
    for path, data in WRITES:
        refused = read_only.post(path, data=data, headers={"X-PWD-Token": TOKEN})
        assert refused.status_code == 403 and "read-only" in refused.text, path
    assert "/launch" not in read_only.get("/").text
    assert spawned == []
    with session_scope(fixed.db_url) as s:
        assert s.exec(select(ConfigChange)).all() == []


def test_the_token_is_never_rendered(fixed):
    c = logged_in()
    for path in ("/", "/runs/fixed", "/runs/fixed/summary", "/runs/fixed/kb", "/runs/fixed/coverage", "/login",
                 "/launch", "/runs/fixed/blame?item=1"):
        page = c.get(path)
        assert page.status_code == 200 and TOKEN not in page.text, path
        assert "log out" in page.text or path == "/runs/fixed/summary"


def test_set_goal_and_budgets_with_the_token_changes_a_stopped_run(fixed):
    c = client()
    done = c.post("/runs/fixed/set", data={"goal": "0.9", "max_rounds": "3", "max_cost": "1.5"},
                  headers={"X-PWD-Token": TOKEN}, follow_redirects=False)
    assert done.status_code == 303 and "/runs/fixed?msg=" in done.headers["location"]
    with session_scope(fixed.db_url) as s:
        changes = sorted((x.key, x.old, x.new, x.how) for x in s.exec(select(ConfigChange)).all())
    assert changes == [("llm.max_cost", None, 1.5, "set"), ("loop.goal", 0.8, 0.9, "set")]
    assert "goal <input name=\"goal\" value=\"0.9\"" in c.get("/runs/fixed").text
    bad = c.post("/runs/fixed/set", data={"goal": "2"}, headers={"X-PWD-Token": TOKEN})
    assert bad.status_code == 400 and "loop.goal" in bad.text
    frozen = c.post("/runs/fixed/set", data={"other": "student.lora_r=2"}, headers={"X-PWD-Token": TOKEN})
    assert frozen.status_code == 400 and "cannot change in a started run" in frozen.text


def test_pause_of_a_run_that_is_not_running_is_refused(fixed):
    refused = logged_in().post("/runs/fixed/pause")
    assert refused.status_code == 400 and "run fixed is not running" in refused.text


def test_resume_and_launch_start_the_cli_commands(fixed, spawned, tmp_path):
    c = logged_in()
    assert c.post("/runs/fixed/resume", follow_redirects=False).status_code == 303
    config = tmp_path / "run.yaml"
    config.write_text("loop:\n  goal: 0.7\n")
    started = c.post("/launch", data={"config": str(config), "corpus": str(tmp_path / "corpus"), "run_id": "new"},
                     follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"].startswith("/runs/new?msg=launched")
    assert spawned == [["resume", "fixed", "-q"],
                       ["run", "--run-id", "new", "-q", "-c", str(config), "--corpus", str(tmp_path / "corpus")]]
    assert c.post("/launch", data={"config": "missing.yaml"}).status_code == 400
    assert c.post("/launch", data={"run_id": "fixed"}).status_code == 400  # exists
    assert c.post("/launch", data={"run_id": "../x"}).status_code == 400
    assert len(spawned) == 2


@pytest.fixture
def at_patch_gate(fixed, monkeypatch):
    from pwd_agent import driver

    monkeypatch.setattr(driver, "waiting_gate", lambda ctx: {"gate": "on_patch", "round": 1, "patches": 1})
    with session_scope(fixed.db_url) as s:
        s.get(Run, "fixed").status, s.get(Run, "fixed").gate = "paused", "on_patch"
        run = s.get(Run, "fixed")
        run.status, run.gate = "paused", "on_patch"
        s.add(run)
    return fixed


def patch_samples(ctx) -> list:
    with session_scope(ctx.db_url) as s:
        return [(x.prompt, x.answer) for x in s.exec(select(Sample).where(Sample.origin == "patch")).all()]


def test_the_gate_shows_its_patches_and_answers_start_review(at_patch_gate, spawned):
    c = logged_in()
    page = c.get("/runs/fixed")
    assert "Waiting at the on_patch gate" in page.text and "patch 1 &lt;- diagnosis 1" in page.text
    jsonl = c.get("/runs/fixed/gate/patches.jsonl")
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert rows == [{"patch_id": 1, "kind": "qa", "prompt": "What comes after a?", "answer": "b comes next.",
                     "statement_ids": [], "concept_ids": []}]
    assert c.post("/runs/fixed/review", data={"action": "approve"}, follow_redirects=False).status_code == 303
    refused = c.post("/runs/fixed/review", data={"action": "reject"})
    assert refused.status_code == 400 and "reject needs a reason" in refused.text
    assert c.post("/runs/fixed/review", data={"action": "reject", "reason": "thin"},
                  follow_redirects=False).status_code == 303
    assert spawned == [["review", "fixed", "approve", "-q"], ["review", "fixed", "reject", "-q", "--reason", "thin"]]


def test_a_bad_upload_is_refused_with_its_line_and_nothing_is_stored(at_patch_gate, spawned):
    c = logged_in()
    good = {"patch_id": 1, "kind": "qa", "prompt": "What follows a?", "answer": "After a comes b."}
    bad = json.dumps(good) + "\n" + json.dumps({**good, "answer": ""}) + "\n"
    refused = c.post("/runs/fixed/review", data={"action": "edit"}, files={"file": ("bad.jsonl", bad)})
    assert refused.status_code == 400 and "bad.jsonl line 2: answer" in refused.text, refused.text
    other = json.dumps({**good, "patch_id": 7}) + "\n"
    refused = c.post("/runs/fixed/review", data={"action": "edit"}, files={"file": ("other.jsonl", other)})
    assert refused.status_code == 400 and "other.jsonl line 1: patch 7 is not in this batch" in refused.text
    assert patch_samples(at_patch_gate) == [("What comes after a?", "b comes next.")]
    assert not (at_patch_gate.run_dir / "reviews").exists() and spawned == []

    done = c.post("/runs/fixed/review", data={"action": "edit"},
                  files={"file": ("good.jsonl", json.dumps(good) + "\n")}, follow_redirects=False)
    assert done.status_code == 303
    [kept] = (at_patch_gate.run_dir / "reviews").iterdir()
    assert spawned == [["review", "fixed", "edit", str(kept.resolve()), "-q"]]
    assert patch_samples(at_patch_gate) == [("What comes after a?", "b comes next.")]  # the review process stores it


def test_nothing_waits_is_refused(fixed):
    refused = logged_in().post("/runs/fixed/review", data={"action": "approve"})
    assert refused.status_code == 400 and "nothing waits for review" in refused.text


def test_cached_views_follow_the_store(fixed):
    """Coverage and blame are kept per store state: a new row shows at once."""
    from pwd_agent.store import Statement

    c = client()
    assert "option covers (probes only): 0 of 0" in c.get("/runs/fixed/coverage").text
    with session_scope(fixed.db_url) as s:
        s.add(Statement(chain_id=1, position=0, subject="a", predicate="precedes", object="b", source_quote="a b",
                        spo_key="a|precedes|b"))
    assert "option covers (probes only): 1 of 1" in c.get("/runs/fixed/coverage").text


def test_a_crashed_run_shows_how_it_ended_and_offers_resume(fixed):
    with session_scope(fixed.db_url) as s:
        run = s.get(Run, "fixed")
        run.status, run.error, run.stage = "crashed", "RuntimeError: a bug", "train"
        s.add(run)
    page = logged_in().get("/runs/fixed").text
    assert "crashed (RuntimeError: a bug)" in page and "continue: <code>pwd-agent resume fixed</code>" in page
    assert 'id="resume"' in page and 'id="pause"' not in page
    assert "crashed (RuntimeError: a bug)" in client().get("/").text


def test_launch_shows_the_cli_error_of_a_run_that_cannot_start(tmp_path):
    """The real `pwd-agent run` process: it refuses the corpus before a run folder exists, and the page says why."""
    config = tmp_path / "run.yaml"
    config.write_text(f"corpus:\n  path: {tmp_path / 'nowhere'}\n")
    refused = logged_in().post("/launch", data={"config": str(config), "run_id": "nocorpus"})
    assert refused.status_code == 400 and "nowhere" in refused.text, refused.text
    assert not (tmp_path / "runs" / "nocorpus" / "config.yaml").exists()
