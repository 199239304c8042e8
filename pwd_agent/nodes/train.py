"""train: compose the round's training set and compile it into a LoRA adapter in a subprocess."""

from __future__ import annotations

import ctypes
import json
import random
import re
import shutil
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

from langgraph.runtime import Runtime
from sqlmodel import Session, select

from pwd_agent.errors import PwdAgentError, TrainingError
from pwd_agent.events import emit
from pwd_agent.gates import gate
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Patch, Round, RoundSample, Sample, session_scope
from pwd_agent.prompting import choice_prompt_version
from pwd_agent.store.queries import round_samples
from pwd_agent.student import resolve_student
from pwd_agent.training.job import TrainJob


def train(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Train the round's adapter on its set (V1, or patches plus replay) from the base or the previous round."""
    ctx = runtime.context
    round_id = state.get("round", 0)
    with session_scope(ctx.db_url) as session:
        row = session.get(Round, round_id)
        finished = row is not None and row.status in ("trained", "evaluated")
    if finished:
        emit(ctx.db_url, "train", f"round {round_id} already trained, skipping")
        return {}
    if round_id >= 2:  # a repair round: a reviewer may want to look before the compute is spent
        gate(ctx, "before_train", lambda s: {"round": round_id})
    with session_scope(ctx.db_url) as session:
        row = session.get(Round, round_id) or Round(id=round_id)
        row.config_hash = ctx.config.config_hash()
        row.prompt_version = choice_prompt_version()
        row.status = "trained" if round_id == 0 else "training"  # round 0 is the base model
        session.add(row)
        fallback, floor = 0, 0
        if round_id > 0:
            size = ctx.config.builder.repair_size
            fallback = compose_training_set(session, round_id, ctx.config.builder.patch_fraction,
                                            ctx.config.builder.seed, size)
            floor = round_floor(session, size, round_id)
        n_patch, n_replay = row.n_patch, row.n_replay
    if fallback:  # emitted after the commit: an event is its own write
        warn_fallback(ctx, round_id, replay_wanted(n_patch, ctx.config.builder.patch_fraction, floor), n_replay,
                      fallback)
    if round_id == 0:
        emit(ctx.db_url, "train", "round 0 is the base model: evaluated without training")
        return {}
    with session_scope(ctx.db_url) as session:
        parent = parent_round(session, ctx.config.train.repair_from, round_id)
        init = session.get(Round, parent).adapter_path if parent else None
        row = session.get(Round, round_id)
        row.epochs, row.parent_round = ctx.config.train.epochs, parent
    metrics = run_training(ctx, round_id, init)
    with session_scope(ctx.db_url) as session:
        row = session.get(Round, round_id)
        row.status, row.train_loss = "trained", metrics["train_loss"]
        row.adapter_path = str(ctx.round_dir(round_id) / "adapter")
        row.epochs = kept_epochs(row.epochs, metrics)
    (ctx.round_dir(round_id) / "DONE").write_text("trained\n")
    kept = (f"; kept epoch {metrics['best_epoch']} of {metrics['epochs_run']} by held-out loss"
            if "best_epoch" in metrics else "")
    emit(ctx.db_url, "train",
         f"round {round_id} trained: loss {metrics['first_loss']:.3f} -> {metrics['train_loss']:.3f} "
         f"on {metrics['examples']} samples in {metrics['seconds']:.0f}s{kept}", **metrics)
    return {}


def kept_epochs(configured: float | None, metrics: dict) -> float | None:
    """The epochs the saved weights saw, the exposure ledger's factor: early stopping keeps its best
    epoch's weights (metrics' best_epoch), otherwise every configured epoch."""
    return metrics.get("best_epoch") or configured


def parent_round(session: Session, repair_from: str, round_id: int) -> int | None:
    """The round whose adapter a repair round continues from (train.repair_from=previous): the
    previous round, when it has one; None means training starts from the base model."""
    if repair_from != "previous" or round_id < 2:
        return None
    previous = session.get(Round, round_id - 1)
    if previous is None or not previous.adapter_path:
        # Its set was composed to continue (patches and a replay share): from the base it would lose V1.
        raise PwdAgentError(f"round {round_id} should continue round {round_id - 1}'s adapter "
                            "(train.repair_from=previous), but that round has none",
                            f"train round {round_id - 1} first, or set train.repair_from=base")
    return previous.id


def compose_training_set(session: Session, round_id: int, patch_fraction: float, seed: int,
                         repair_size: int | str = "patches") -> int:
    """Round 1 trains on V1; later rounds on their patches plus replay of earlier samples that
    share no statement with the patches (the paper's rule), topped up with random V1 samples when
    that pool is short (the paper's fallback) or smaller than `repair_size` asks (`round_floor`).
    `repair_size` 'v1+patches' replays every V1 sample instead (none drawn, so no earlier round's
    patch takes a V1 sample's place). Returns how many random V1 samples were added. Idempotent: an
    existing set is kept (and 0 returned)."""
    if session.exec(select(RoundSample).where(RoundSample.round_id == round_id)).first():
        return 0
    row = session.get(Round, round_id)
    if round_id == 1:
        v1 = _v1_ids(session)
        session.add_all(RoundSample(round_id=1, sample_id=i, role="v1") for i in v1)
        row.n_train = len(v1)
        return 0
    patches = _patch_samples(session, round_id)
    if repair_size == "v1+patches":
        replay, extra = _v1_ids(session), []
    else:
        replay, extra = _draw_replay(session, round_id, patches, patch_fraction, seed,
                                     round_floor(session, repair_size, round_id))
    session.add_all(RoundSample(round_id=round_id, sample_id=s.id, role="patch") for s in patches)
    session.add_all(RoundSample(round_id=round_id, sample_id=i, role="replay") for i in replay)
    session.add_all(RoundSample(round_id=round_id, sample_id=i, role="random") for i in extra)
    row.n_patch, row.n_replay = len(patches), len(replay) + len(extra)
    row.n_train = row.n_patch + row.n_replay
    return len(extra)


def _draw_replay(session: Session, round_id: int, patches: list[Sample], patch_fraction: float, seed: int,
                 floor: int) -> tuple[list[int], list[int]]:
    """(replay, random V1) sample ids for the ratio rule with at least `floor` samples in the round."""
    pool = _replay_pool(session, round_id, {sid for s in patches for sid in s.statement_ids})
    wanted = replay_wanted(len(patches), patch_fraction, floor) if patches else len(pool)
    replay = [s.id for s in random.Random(f"{seed}:replay:{round_id}").sample(pool, min(wanted, len(pool)))]
    # A short pool is filled from V1, even with samples that share statements with the patches.
    chosen = set(replay)
    spare = [i for i in _v1_ids(session) if i not in chosen]
    return replay, random.Random(f"{seed}:random:{round_id}").sample(spare, min(wanted - len(replay), len(spare)))


def warn_fallback(ctx: RunContext, round_id: int, wanted: int, n_replay: int, fallback: int) -> None:
    """A warning event: the replay pool was short and random V1 samples filled it."""
    pool = n_replay - fallback  # a short pool is used whole
    short = f"; still {wanted - n_replay} short: no V1 sample left" if n_replay < wanted else ""
    emit(ctx.db_url, "train", f"round {round_id}: replay pool has {pool} samples, {wanted} wanted; "
         f"added {fallback} random V1 samples{short}", "warning", pool=pool, wanted=wanted, random_v1=fallback)


def replay_wanted(n_patch: int, patch_fraction: float, floor: int = 0) -> int:
    """How many replay samples go with `n_patch` patch samples so patches are `patch_fraction` of the mix,
    or more, so the round trains on at least `floor` samples."""
    return max(round(n_patch * (1 - patch_fraction) / patch_fraction), floor - n_patch)


def round_floor(session: Session, repair_size: int | str, round_id: int) -> int:
    """`builder.repair_size` as a sample count: 0 for 'patches', V1's size for 'v1', V1's size plus round
    `round_id`'s patch samples for 'v1+patches' (so the replay is all of V1). Why it matters: every round is
    retrained from the base, so a repair round smaller than V1 gives the facts fewer exposures than round 1
    did and can lose what round 1 learned."""
    if repair_size == "patches":
        return 0
    if repair_size == "v1":
        return len(_v1_ids(session))
    if repair_size == "v1+patches":
        return len(_v1_ids(session)) + len(_patch_samples(session, round_id))
    return int(repair_size)


def _v1_ids(session: Session) -> list[int]:
    """Every V1 sample id, in id order."""
    return list(session.exec(select(Sample.id).where(Sample.origin == "v1").order_by(Sample.id)).all())


def _patch_samples(session: Session, round_id: int) -> list[Sample]:
    """The samples of the patches that target this round, in id order."""
    patch_ids = session.exec(select(Patch.id).where(Patch.target_round == round_id)).all()
    return list(session.exec(select(Sample).where(Sample.patch_id.in_(patch_ids)).order_by(Sample.id)).all())


def _replay_pool(session: Session, round_id: int, patched: set[int]) -> list[Sample]:
    """Samples of earlier rounds' sets that share no statement with the patches, in id order."""
    earlier = session.exec(select(RoundSample.sample_id).where(RoundSample.round_id < round_id).distinct()).all()
    return [s for s in session.exec(select(Sample).where(Sample.id.in_(earlier)).order_by(Sample.id)).all()
            if not patched.intersection(s.statement_ids)]


def write_training_data(session: Session, round_id: int, path: Path) -> int:
    """The round's training set as the trainer's JSONL; returns the number of samples."""
    rows = round_samples(session, round_id)
    # The statement ids let the trainer hold out other wordings of trained facts (train.heldout_share).
    path.write_text("".join(json.dumps({"id": s.id, "prompt": s.prompt, "answer": s.answer,
                                        "statements": s.statement_ids}) + "\n" for s in rows))
    return len(rows)


def run_training(ctx: RunContext, round_id: int, init_adapter: str | None = None) -> dict:
    """From the base model, or from `init_adapter` (train.repair_from=previous); a crash marks the
    round failed with the trainer's last lines."""
    folder = ctx.round_dir(round_id)
    adapter = folder / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)  # a killed earlier attempt may have left half an adapter
    with session_scope(ctx.db_url) as session:
        n = write_training_data(session, round_id, folder / "train.jsonl")
    if n == 0:
        raise PwdAgentError(f"round {round_id} has no training samples",
                            "the KB has no statements to teach: check `pwd-agent logs RUN` for extraction failures")
    cfg = ctx.config
    job = train_job(cfg, folder / "train.jsonl", adapter, init_adapter=init_adapter)
    (folder / "job.json").write_text(job.model_dump_json(indent=2))
    command = trainer_command(cfg.train, folder / "job.json")
    shown = " ".join(["python", *command[1:]])
    start = f", continuing from {init_adapter}" if init_adapter else ""
    emit(ctx.db_url, "train", f"round {round_id}: training on {n} samples{start} ({shown})")
    tail = _stream(ctx, command, folder / "train.log")
    if tail is not None:
        with session_scope(ctx.db_url) as session:
            row = session.get(Round, round_id)
            row.status, row.error = "failed", "\n".join(tail)
        emit(ctx.db_url, "train", f"round {round_id} training failed", "error", last_lines=list(tail))
        raise TrainingError(f"training of round {round_id} failed:\n  " + "\n  ".join(tail),
                            f"see {folder / 'train.log'}; fix the cause, then `pwd-agent resume {ctx.run_id}`")
    return json.loads((adapter / "train_metrics.json").read_text())


def train_job(cfg, data: Path, adapter: Path, seed: int | None = None, init_adapter: str | None = None) -> TrainJob:
    """The trainer's job for `data` under the run config (benches pass another training seed, and
    the adapter to continue from)."""
    return TrainJob.from_config(cfg, resolve_student(cfg.student), str(data), str(adapter), seed,
                                init_adapter=init_adapter)


def trainer_command(cfg, job: Path) -> list[str]:
    """The trainer's command line under train.launcher (see training/trainer.py for the sharding)."""
    module = ["-m", "pwd_agent.training", str(job)]
    if cfg.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.num_processes}",
                *module]
    if cfg.launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", f"--num_processes={cfg.num_processes}",
                "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
                *(["--multi_gpu"] if cfg.num_processes > 1 else []), *module]
    return [sys.executable, *module]


def _stream(ctx: RunContext, command: list[str], log_path: Path) -> deque | None:
    """Run the trainer, echoing its lines to the run log; None on success, else its last lines."""
    tail: deque = deque(maxlen=15)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=die_with_parent)
        for line in proc.stdout:
            log_file.write(line)
            log_file.flush()  # `tail -f` and the kill test read it live
            line = line.rstrip()
            tail.append(line)
            if line.startswith(("step ", "train:", "done:")):
                emit(ctx.db_url, "train", line, **_step_counts(line))
    return tail if proc.wait() != 0 else None


def _step_counts(line: str) -> dict:
    """{"done": k, "total": n} from a trainer line "step k/n ...", for the progress bar."""
    match = re.match(r"step (\d+)/(\d+)", line)
    return {"done": int(match.group(1)), "total": int(match.group(2))} if match else {}


def die_with_parent() -> None:
    """Linux: the trainer gets SIGKILL when the run process dies, so a killed run leaves no orphan."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
