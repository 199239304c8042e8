"""`status` on a fixed store renders exactly this text."""

from sqlmodel import select

from pwd_agent.config import load_config
from pwd_agent.report.status import render_status
from pwd_agent.runs import create_run
from pwd_agent.store import Event, LLMCall, Round, Run, session_scope

from conftest import add_chain

EXPECTED = """\
run fixed: finished (max_rounds)
KB: 1 documents, 1 chunks, 1 chains, 0 statements, 0 concepts
tests: 4 dev, 2 holdout; goal 0.800 on holdout
training data: 0 V1, 0 patch; 0 dropped by the leakage gate

round  status     scorer   train patch replay   loss    dev holdout general  fixed broken      p dev mass hol mass
    0  evaluated  letters      0     0      0      -  0.100   0.125   0.250      -      -      -        -        -
    1  evaluated  options     50     0      0  1.234  0.300   0.250   0.225      8      1  0.020    0.412    0.375
chance                                                0.067   0.067       -                         0.500    0.375
constant                                              0.500   0.500       -                             -        -
(chance: a uniformly random answer set; constant: dev always "A"; holdout always "B")

agent       calls cached failed  tokens in tokens out     cost
builder         2      1      0        300        120   0.0006
extractor       3      0      1        900        300   0.0015"""


def add_items(s, dev: list[str], holdout: list[str]) -> None:
    """A chain and test items on it with the given key sets."""
    from pwd_agent.store import TestItem

    add_chain(s)
    for variant, (split, answer) in enumerate([("dev", a) for a in dev] + [("holdout", a) for a in holdout]):
        s.add(TestItem(chain_id=1, variant=variant, split=split, question="q", options=["a", "b", "c", "d"],
                       answer=answer))


def test_status_text_on_a_fixed_store(small_corpus):
    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=fixed", "loop.goal=0.8"]))
    with session_scope(ctx.db_url) as s:
        add_items(s, dev=["A", "A", "B,C", "A,B,C,D"], holdout=["B", "C,D"])
        s.add(Round(id=0, status="evaluated", scorer="letters", dev_acc=0.1, holdout_acc=0.125, general_acc=0.25))
        s.add(Round(id=1, status="evaluated", scorer="options", n_train=50, train_loss=1.2341, dev_acc=0.3,
                    holdout_acc=0.25, dev_mass=0.4123, holdout_mass=0.375, general_acc=0.225, fixed=8, broken=1,
                    still_failing=20, gain_p=0.0196))
        base = dict(prompt_version="1", prompt_hash="h", model="m")
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100,
                      cost=0.0005, **base))
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100,
                      cost=0.0005, ok=False, error="steps repeat", **base))
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100,
                      cost=0.0005, **base))
        s.add(LLMCall(agent="builder", prompt_name="builder/samples", input_tokens=150, output_tokens=60,
                      cost=0.0006, **base))
        s.add(LLMCall(agent="builder", prompt_name="builder/samples", input_tokens=150, output_tokens=60,
                      cache_hit=True, **base))
        s.add(Run(run_id="fixed", status="finished", stop_reason="max_rounds", goal_met=False))
    assert render_status(ctx) == EXPECTED


def test_status_warns_when_the_goal_is_no_harder_than_a_constant_answer(small_corpus):
    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=easy", "loop.goal=0.5"]))
    with session_scope(ctx.db_url) as s:
        add_items(s, dev=["A"], holdout=["B", "B", "C"])
    assert ('warning: the goal 0.500 is at or below the best constant answer on holdout (0.667, always "B"): '
            'meeting it says nothing about the student; raise loop.goal') in render_status(ctx).splitlines()


def test_status_of_an_unfinished_run_shows_its_stage_rate_and_eta(small_corpus):
    """Counts since this process started the stage give the rate; an earlier round's pass and the
    time before a resume (Run.process_started_at) are left out. A run whose process died shows no
    ETA and how to continue."""
    from datetime import datetime, timedelta, timezone

    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=live"]))
    t0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
    events = [
        ("train", {"done": 40, "total": 40}, 0),  # round 1's pass, long before
        ("train", {"done": 5, "total": 40}, 600),  # before the resume: not in the rate
        ("train", {"done": 10, "total": 40}, 1010), ("train", {"done": 20, "total": 40}, 1030),
    ]
    with session_scope(ctx.db_url) as s:
        for node, data, at in events:
            s.add(Event(node=node, message=f"{data['done']}/{data['total']} steps", data=data,
                        created_at=t0 + timedelta(seconds=at)))
        s.add(Run(run_id="live", status="running", stage="train", started_at=t0,
                  process_started_at=t0 + timedelta(seconds=1000)))
    text = render_status(ctx, now=t0 + timedelta(seconds=1040))
    assert text.splitlines()[:2] == ["run live: not running, its process died · continue: pwd-agent resume live",
                                     "stage: train 20/40 (50%), 0.50/s"]

    from pwd_agent.runs import run_lock

    with run_lock(ctx):  # as if a process drove it: 20 steps left at 0.5/s, 10 s since the last count
        import subprocess
        import sys

        shown = subprocess.run([sys.executable, "-c", "from datetime import datetime, timezone; "
                                "from pwd_agent.runs import open_run; "
                                "from pwd_agent.report.status import render_status; "
                                "print(render_status(open_run('live'), "
                                "now=datetime(2026, 11, 26, 12, 17, 20, tzinfo=timezone.utc)))"],
                               capture_output=True, text=True, timeout=60)
    assert shown.stdout.splitlines()[:2] == ["run live: running",
                                             "stage: train 20/40 (50%), 0.50/s, ETA 0m30s"], shown.stderr


def test_the_run_row_says_how_the_process_left(small_corpus, monkeypatch):
    """A PwdAgentError stops the run and a bug crashes it: either way the Run row says so, after
    the event that logs it, and `status` names the state and the command that continues."""
    import shutil

    import pytest

    from pwd_agent import graph
    from pwd_agent.driver import execute
    from pwd_agent.errors import PwdAgentError

    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=gone"]))
    moved = small_corpus.with_name("elsewhere")
    shutil.move(small_corpus, moved)  # the corpus went away after the start checks
    with pytest.raises(PwdAgentError) as stopped:
        execute(ctx)
    with session_scope(ctx.db_url) as s:
        run = s.get(Run, "gone")
        last = s.exec(select(Event).order_by(Event.id.desc())).first()
    assert (run.status, run.error, run.stage) == ("stopped", stopped.value.message, None)
    assert last.message == f"stopped: {stopped.value.message}" and run.finished_at >= last.created_at
    assert render_status(ctx).splitlines()[0] == (
        f"run gone: stopped on an error ({stopped.value.message}) · continue: pwd-agent resume gone")

    shutil.move(moved, small_corpus)

    def extract(state, runtime):
        raise RuntimeError("a bug in extract")

    monkeypatch.setattr(graph, "extract", extract)
    with pytest.raises(RuntimeError):
        execute(ctx, resume=True)
    with session_scope(ctx.db_url) as s:
        run = s.get(Run, "gone")
    assert (run.status, run.error, run.stage) == ("crashed", "RuntimeError: a bug in extract", "extract")
    assert render_status(ctx).splitlines()[0].startswith("run gone: crashed (RuntimeError: a bug in extract)")
