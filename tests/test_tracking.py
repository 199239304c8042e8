"""Round metrics reach a real MLflow store and an offline W&B run, once each, across a pause and resume."""

import json
import struct
from pathlib import Path

import pytest
from sqlmodel import select

from pwd_agent.runs import open_run
from pwd_agent.store import Round, session_scope

from conftest import cli, main_here

pytestmark = pytest.mark.slow


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, part = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def wandb_history(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or ".".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.extended  # the default run keeps the refusal and the failing-tracker tests below
def test_round_metrics_reach_mlflow_and_wandb_once_across_a_gate(tiny_model, small_corpus, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_SILENT", "true")
    uri = f"sqlite:///{Path('mlflow.db').resolve()}"
    args = ["run", "--corpus", str(small_corpus), "--run-id", "tracked", "-q", "--goal", "0.99",
            "--set", f"student.model={tiny_model}", "--set", "eval.batch_size=16", "--set", "loop.max_rounds=2",
            "--set", "gates.on_patch=true", "--set", 'tracking.report_to=["mlflow","wandb"]',
            "--set", f"tracking.mlflow_tracking_uri={uri}", "--set", "tracking.wandb_mode=offline"]
    first = cli(*args)
    assert first.returncode == 6, first.stderr  # waits at the patch gate after rounds 0 and 1
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("pwd-agent").experiment_id])
    assert run.info.status == "RUNNING"  # paused, not failed
    assert run.data.params["loop.goal"] == "0.99" and run.data.params["student.model"] == str(tiny_model)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_acc")] == [0, 1]

    done = cli("review", "tracked", "approve", "-q")
    assert done.returncode == 3, done.stderr  # round 2 trained, stopped at max_rounds

    with session_scope(open_run("tracked").db_url) as s:
        stored = {r.id: r for r in s.exec(select(Round)).all()}
    assert sorted(stored) == [0, 1, 2]
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "max_rounds"
    for name in ("dev_acc", "holdout_acc", "general_acc"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in history] == [(i, getattr(stored[i], name)) for i in (0, 1, 2)]
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in loss] == [(i, stored[i].train_loss) for i in (1, 2)]
    fixed = client.get_metric_history(run.info.run_id, "fixed")  # flips against the round before
    assert [(m.step, m.value) for m in fixed] == [(i, stored[i].fixed) for i in (1, 2)]

    history = [row for row in wandb_history(Path("runs/tracked")) if "dev_acc" in row]
    assert [(row["_step"], row["dev_acc"], row["holdout_acc"]) for row in history] == \
        [(i, stored[i].dev_acc, stored[i].holdout_acc) for i in (0, 1, 2)]


def test_a_tracker_that_is_not_installed_is_refused_before_the_run_exists(small_corpus, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--run-id", "nowandb",
                       "--set", 'tracking.report_to=["wandb"]')
    assert result.returncode == 2
    err = result.stderr
    assert "wandb is not installed" in err and "pip install 'pwd-agent[wandb]'" in err
    assert not Path("runs/nowandb").exists()


def test_a_tracker_that_fails_does_not_stop_the_run_and_the_round_is_sent_later(small_corpus):
    """sync's contract, with a tracker of our own protocol standing in for a flaky server."""
    from pwd_agent.config import load_config
    from pwd_agent.runs import create_run
    from pwd_agent.store import Event, WorkUnit
    from pwd_agent.tracking import sync

    class Flaky:
        name = "flaky"

        def __init__(self):
            self.up, self.sent = False, []

        def log_round(self, round_id, metrics):
            if not self.up:
                raise ConnectionError("server unreachable")
            self.sent.append((round_id, metrics["dev_acc"]))

    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=flaky"]))
    with session_scope(ctx.db_url) as s:
        s.add(Round(id=0, status="evaluated", dev_acc=0.1, holdout_acc=0.2))
        s.add(Round(id=1, status="evaluated", dev_acc=0.3, holdout_acc=0.4))
        s.add(Round(id=2, status="training"))
    tracker = Flaky()
    sync(ctx, [tracker])  # fails: nothing marked sent, a warning in the log, no exception
    with session_scope(ctx.db_url) as s:
        assert not s.exec(select(WorkUnit).where(WorkUnit.stage == "track:flaky")).all()
        assert any("round 0 not sent to flaky (server unreachable); will retry" in e.message
                   for e in s.exec(select(Event)).all())
    tracker.up = True
    sync(ctx, [tracker])
    sync(ctx, [tracker])  # nothing left to send: no round twice
    assert tracker.sent == [(0, 0.1), (1, 0.3)]
