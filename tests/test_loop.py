"""The whole loop on the tiny model, through the real CLI: stored rows, exit codes, kill and resume."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

import pytest
from sqlmodel import select

from pwd_agent.leakage import load_gate, sample_text
from pwd_agent.runs import open_run
from pwd_agent.store import (
    Chain, Chunk, ConceptStatement, Diagnosis, Event, GeneralResult, ItemResult, LeakedSample, LLMCall, Patch, Probe,
    ProbeResult, Round, RoundSample, Run, Sample, Statement, TestItem, WorkUnit, ConfigChange,
    session_scope,
)

from conftest import cli

pytestmark = pytest.mark.slow


# Tests that do not look at the general-ability guard skip its 40 items per round (time).
NO_GUARD = ("--set", "eval.general=none")


def tiny_args(tiny_model: Path, corpus: Path, run_id: str, *extra: str) -> list[str]:
    """A run on the tiny model; two items per chain (one per split) keep these tests fast, the
    facets are tested in test_offline_agents and with three items in test_llm_loop."""
    return ["run", "--corpus", str(corpus), "--run-id", run_id, "-q",
            "--set", f"student.model={tiny_model}", "--set", "eval.batch_size=16", "--set", "tests.items_per_chain=2",
            *extra]


def test_two_rounds_store_every_step(tiny_model, small_corpus):
    result = cli(*tiny_args(tiny_model, small_corpus, "loop", "--goal", "0.99", "--set", "loop.max_rounds=2",
                            "--set", "builder.paraphrases=1", "--set", "builder.text_passages=1",
                            "--set", "train.heldout_share=0.1", "--set", "train.epochs=2"))
    assert result.returncode == 3, result.stderr  # goal not met: the documented "stopped short" code
    assert "stopped short of the goal (max_rounds)" in result.stdout

    ctx = open_run("loop")
    with session_scope(ctx.db_url) as s:
        rounds = s.exec(select(Round).order_by(Round.id)).all()
        assert [(r.id, r.status) for r in rounds] == [(0, "evaluated"), (1, "evaluated"), (2, "evaluated")]
        assert rounds[0].adapter_path is None and rounds[0].n_train == 0
        assert all(r.started_at <= r.finished_at for r in rounds)  # finished_at: when the round was evaluated
        assert all(Path(r.adapter_path, "adapter_model.safetensors").is_file() for r in rounds[1:])
        trained = {int(e.message.split()[1]): e.data for e in s.exec(select(Event).where(Event.node == "train")).all()
                   if " trained: " in e.message}
        # train.epochs=2 with a held-out share: the ledger counts the epochs of the weights kept
        assert [r.epochs for r in rounds[1:]] == [trained[r.id]["best_epoch"] for r in rounds[1:]]

        items = s.exec(select(TestItem)).all()
        assert {i.split for i in items} == {"dev", "holdout"}
        results = s.exec(select(ItemResult)).all()
        assert len(results) == 3 * len(items)  # every item scored in every round, prediction stored
        assert all(r.prompt_version == "eval/letters@v1" for r in results)
        general = s.exec(select(GeneralResult)).all()  # the guard: 40 shipped items, every round
        assert len(general) == 3 * 40 and all(r.general_acc is not None for r in rounds)
        assert rounds[1].general_acc == sum(g.passed for g in general if g.round_id == 1) / 40

        split = {i.id: i.split for i in items}
        failed_dev = {r.item_id for r in results if r.round_id == 1 and not r.passed and split[r.item_id] == "dev"}
        diagnoses = s.exec(select(Diagnosis).where(Diagnosis.round_id == 1)).all()
        assert {d.item_id for d in diagnoses} == failed_dev  # every failed dev item, never a holdout item
        assert all(d.kind in ("untaught", "concept_gap", "chain_break", "item_suspect") and d.evidence["rule"]
                   for d in diagnoses)
        check_probe_verdicts(s, items, diagnoses, results, epochs=2)

        patches = s.exec(select(Patch)).all()
        assert {p.diagnosis_id for p in patches} == {d.id for d in diagnoses if d.kind != "item_suspect"}
        patch_samples = s.exec(select(Sample).where(Sample.origin == "patch")).all()
        assert all(x.statement_ids for x in patch_samples)
        check_patches(s, patches, patch_samples)
        texts = s.exec(select(Sample).where(Sample.kind == "text")).all()  # builder.text_passages: one per chain
        assert len(texts) == len(s.exec(select(Chain)).all()) and all(x.prompt == "" for x in texts)

        members = s.exec(select(RoundSample).where(RoundSample.round_id == 2)).all()
        roles = {m.role for m in members}
        assert "patch" in roles and roles <= {"patch", "replay", "random"}  # random: V1 filling a short pool
        by_id = {x.id: x for x in s.exec(select(Sample)).all()}
        patched = {sid for m in members if m.role == "patch" for sid in by_id[m.sample_id].statement_ids}
        replay = [by_id[m.sample_id] for m in members if m.role == "replay"]
        assert not any(patched & set(x.statement_ids) for x in replay)  # the replay rule
        eligible = [x for x in by_id.values() if x.origin == "v1" and not patched & set(x.statement_ids)]
        assert len(replay) == len(eligible) or "random" not in roles  # random only once the pool is used up
        assert all(by_id[m.sample_id].origin == "v1" for m in members if m.role == "random")
        assert rounds[2].n_replay == sum(m.role != "patch" for m in members)
        assert rounds[2].n_train == rounds[2].n_patch + rounds[2].n_replay == len(members)

        gate = load_gate(s, 8, 0.4)  # the config's defaults: no stored sample reproduces a test item
        assert not [x.id for x in by_id.values() if gate.check(sample_text(x))]
        assert all(leak.overlap >= 0.4 for leak in s.exec(select(LeakedSample)).all())

        agents = {c.agent for c in s.exec(select(LLMCall)).all()}
        assert agents == {"extractor", "tester", "builder", "debugger"}

    status = cli("status", "loop")
    assert status.returncode == 0
    assert "run loop: finished (max_rounds)" in status.stdout
    assert status.stdout.count(" evaluated ") == 3
    logs = cli("logs", "loop", "-f", timeout=30)  # follows until the run's last event, then returns
    assert logs.returncode == 0 and logs.stdout.strip().endswith("[run] finished: max_rounds")
    assert "[decide] stop after round 2: max_rounds" in logs.stdout
    listing = cli("list")
    assert "loop" in listing.stdout and "max_rounds" in listing.stdout
    check_export()
    check_report()
    check_blame_and_coverage()
    check_every_round_trains_from_the_base(tiny_model)


def check_every_round_trains_from_the_base(tiny_model: Path) -> None:
    """Rounds 1 and 2 start from the same base student with a fresh LoRA, never from round 1's adapter."""
    import json

    folders = [Path("runs/loop/rounds/01"), Path("runs/loop/rounds/02")]
    jobs = [json.loads((f / "job.json").read_text()) for f in folders]
    assert jobs[0]["model_path"] == jobs[1]["model_path"] == str(tiny_model)
    earlier = [str(folders[0]), str(folders[0].resolve()), "rounds/01"]
    assert not any(name in str(value) for value in jobs[1].values() for name in earlier)
    for folder in folders:  # what the trainer loaded (its own record) and what PEFT saved the adapter against
        metrics = json.loads((folder / "adapter" / "train_metrics.json").read_text())
        assert metrics["base_model"] == str(tiny_model)
        # train.heldout_share: the node passes each sample's statements, so the trainer can hold wordings out
        rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
        assert all("statements" in r for r in rows) and metrics["examples"] < len(rows)
        assert metrics["epochs_run"] == len(metrics["heldout_losses"]) == 2 and metrics["best_epoch"] in (1, 2)
        adapter_config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(tiny_model)


def check_blame_and_coverage() -> None:
    with session_scope(open_run("loop").db_url) as s:
        d = s.exec(select(Diagnosis).where(Diagnosis.round_id == 1, Diagnosis.kind != "item_suspect")).first()
        n_chains = len(s.exec(select(Chain)).all())
        after = s.get(ItemResult, (2, d.item_id))
    story = cli("blame", "loop", str(d.item_id))
    assert story.returncode == 0, story.stderr
    assert f"round 1 diagnosis: {d.kind}" in story.stdout
    assert f"samples for round 2 -> {'fixed' if after.passed else 'still failing'}" in story.stdout
    assert all(f"{r:>5}  " in story.stdout for r in (0, 1, 2))  # one line per round
    assert cli("blame", "loop", "9999").returncode == 2
    table = cli("coverage", "loop")
    assert table.returncode == 0 and "pass rates: round 2" in table.stdout
    rows = [line for line in table.stdout.splitlines() if line[:5].strip().isdigit()]
    assert len(rows) == n_chains and "untaught statements" in table.stdout
    # Exposures: round 2's set (patches + replay; trained from the base, so no parent's), each sample once
    # per statement it cites, x epochs; a definition sample cites its concept's statements but exposes none.
    with session_scope(open_run("loop").db_url) as s:
        members = set(s.exec(select(RoundSample.sample_id).where(RoundSample.round_id == 2)).all())
        cited = Counter(sid for x in s.exec(select(Sample)).all() if x.id in members and x.kind != "concept"
                        for sid in x.statement_ids)
        epochs = open_run("loop").config.train.epochs
        counts = sorted(cited[st] * epochs for st in s.exec(select(Statement.id)).all())
    assert counts[-1] > 0 and (f"round 2's training set x {epochs:g} epochs" in table.stdout)
    assert f"min {counts[0]:g}, median {median(counts):g}, max {counts[-1]:g}" in table.stdout


def check_report() -> None:
    """`report` writes a self-contained page with every round and its plots embedded, and the PNGs."""
    result = cli("report", "loop")
    assert result.returncode == 0, result.stderr
    page = Path("runs/loop/report.html").read_text()
    pngs = sorted(Path("runs/loop/report").glob("*.png"))
    assert {p.stem for p in pngs} == {"accuracy", "diagnoses", "flips", "coverage", "cost"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert page.count("data:image/png;base64,") == len(pngs) and "src=\"http" not in page  # opens from disk
    rounds_table = page.split("<h2>Rounds</h2>")[1].split("<h2>")[0]
    assert rounds_table.count("<tr><td>") == 3 and "max_rounds" in page and "eval/letters@v1" in page
    assert '<tr class="baseline"><td>chance</td>' in rounds_table  # chance and the best constant beside them
    assert '<tr class="baseline"><td>best constant</td>' in rounds_table
    with session_scope(open_run("loop").db_url) as s:
        for r in s.exec(select(Round)).all():  # the table's numbers are the store's
            assert f"<tr><td>{r.id}</td><td>evaluated</td><td>{r.scorer}</td><td>{r.n_train}</td>" in page
            assert f"<td>{r.dev_acc:.3f}</td><td>{r.holdout_acc:.3f}</td><td>{r.general_acc:.3f}</td>" in page
            assert f"<td>{r.config_hash}</td></tr>" in page
    prompts_table = page.split("<h2>Agent prompt versions per round</h2>")[1].split("<h2>")[0]
    assert "<tr><td>offline/l3_chain</td>" in prompts_table and "<td>rules-1</td>" in prompts_table


def check_patches(s, patches, patch_samples) -> None:
    """Each patch stores what it counts; its recipe samples (the paraphrase wordings) teach only its
    diagnosis' statements, and no statement is dosed by two patches of a round; no sample repeats."""
    from pwd_agent.recipes import PATCH_WORDINGS, _fill
    from pwd_agent.store.queries import kb_chain, kb_statements

    chains = {c.id: kb_chain(c) for c in s.exec(select(Chain)).all()}
    recipe_of = {}  # (prompt, answer) of every patch wording of every statement -> that statement
    for chain in chains.values():
        for st in kb_statements(s, chain.id):
            for q, a in PATCH_WORDINGS:
                recipe_of[_fill(q, chain, st.subject, st.object), _fill(a, chain, st.subject, st.object)] = st.id
    dosed_by: dict[int, set[int]] = {}
    for p in patches:
        d = s.get(Diagnosis, p.diagnosis_id)
        mine = [x for x in patch_samples if x.patch_id == p.id]
        assert p.target_round == 2 and p.n_samples == len(mine)
        recipe = [x for x in mine if (x.prompt, x.answer) in recipe_of]
        assert all(x.statement_ids == [recipe_of[x.prompt, x.answer]] for x in recipe)
        assert {sid for x in recipe for sid in x.statement_ids} <= set(d.statement_ids), (d.kind, d.statement_ids)
        for x in recipe:
            dosed_by.setdefault(x.statement_ids[0], set()).add(p.id)
    assert dosed_by and all(len(ids) == 1 for ids in dosed_by.values())  # one patch per statement per round
    every = [(x.prompt, x.answer) for x in s.exec(select(Sample)).all()]
    assert len(every) == len(set(every))  # no sample written twice, V1 or patch


def check_probe_verdicts(s, items, diagnoses, results, epochs: float) -> None:
    """Every KB node has a probe; each diagnosis follows from round 1's probes of the nodes the item
    rests on (its keys' and chosen options' statements, else the chain's) and round 1's exposures."""
    from pwd_agent.exposures import round_ledger, total
    from pwd_agent.nodes.diagnose import item_nodes

    probes = s.exec(select(Probe)).all()
    assert {p.node_id for p in probes if p.target == "statement"} == {st.id for st in s.exec(select(Statement)).all()}
    linked = {link.concept_id for link in s.exec(select(ConceptStatement)).all()}  # the ones a chain can blame
    assert {p.node_id for p in probes if p.target == "concept"} == linked
    assert all(len(p.options) >= 3 and p.answer in "ABCD" for p in probes)
    passed = {r.probe_id: r.passed for r in s.exec(select(ProbeResult).where(ProbeResult.round_id == 1)).all()}
    verdict = {(p.target, p.node_id): passed[p.id] for p in probes if p.id in passed}
    ledger = round_ledger(s, 1, epochs)
    item_of = {i.id: i for i in items}
    predicted = {r.item_id: r.predicted for r in results if r.round_id == 1}
    statements_of = {}
    for st in s.exec(select(Statement)).all():
        statements_of.setdefault(st.chain_id, set()).add(st.id)
    for d in diagnoses:
        item = item_of[d.item_id]
        own = [p for p in probes if p.target == "statement" and p.node_id in statements_of[item.chain_id]]
        assert own and all(p.id in passed for p in own)  # the failed item's probes were scored this round
        located = item_nodes(item, predicted[item.id]) or sorted(statements_of[item.chain_id])
        nodes = {(n["target"], n["id"]): n for n in d.evidence["nodes"]}
        assert sorted(i for t, i in nodes if t == "statement") == located
        for node, n in nodes.items():  # the evidence is the round's probe verdict and exposures
            assert n["probe"] == verdict.get(node) and n["exposures"] == total(ledger, node)
        failing = {node for node, n in nodes.items() if not (n["probe"] if n["probe"] is not None
                                                              else n["exposures"] > 0)}
        if d.kind in ("untaught", "concept_gap"):  # the failing located nodes are named, and they did fail
            assert failing and {i for t, i in failing if t == "statement"} <= set(d.statement_ids)
            assert sorted(i for t, i in failing if t == "concept") == d.concept_ids
            assert set(d.statement_ids) <= set(located)
            never = all(total(ledger, node) == 0 for node in failing)
            assert d.kind == ("untaught" if never else "concept_gap")
        else:  # chain_break / item_suspect: only when every located node passed its probe
            assert not failing
            assert d.statement_ids == (located if d.kind == "chain_break" else [])
        assert d.judge_kind in ("concept_gap", "chain_break")  # the judge's second opinion is stored


def check_export() -> None:
    """`export` writes the benchmark, lm-eval tasks, the last round's data in three formats, a serve line."""
    import json

    import yaml

    assert cli("export", "loop", "--round", "7").returncode == 2  # no such round: a clear refusal
    result = cli("export", "loop")
    assert result.returncode == 0, result.stderr
    out = Path("runs/loop/export")
    with session_scope(open_run("loop").db_url) as s:
        n_items = len(s.exec(select(TestItem)).all())
        last = s.get(Round, 2)
    bench = [json.loads(line) for line in (out / "benchmark.jsonl").read_text().splitlines()]
    assert len(bench) == n_items and all(r["prompt"].startswith(r["question"]) and r["answer"] for r in bench)
    loader = type("TaskLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda load, node: load.construct_scalar(node))
    task = yaml.load((out / "lm_eval" / "pwd_loop_holdout.yaml").read_text(), Loader=loader)
    assert task["process_results"] == "utils.process_results" and (out / "lm_eval" / "utils.py").is_file()
    data = Path(task["dataset_kwargs"]["data_files"]["test"])
    assert data.is_file() and all(json.loads(x)["split"] == "holdout" for x in data.read_text().splitlines())
    assert task["output_type"] == "generate_until" and task["generation_kwargs"]["max_gen_toks"] == 15
    messages = (out / "train_messages.jsonl").read_text().splitlines()
    assert len(messages) == last.n_train == len(json.loads((out / "train_alpaca.json").read_text()))
    assert json.loads(messages[0])["messages"][1]["role"] == "assistant"
    assert len(json.loads((out / "train_sharegpt.json").read_text())) == last.n_train
    assert f"--lora-modules loop-r2={Path(last.adapter_path).resolve()}" in (out / "serve.sh").read_text()


def test_repair_from_previous_continues_round_one_on_a_v1_budget(tiny_model, small_corpus):
    """train.repair_from=previous: round 2 trains on from round 1's adapter, records its lineage, and
    the exposure ledger adds round 1's exposures to its own; builder.v1_budget leaves statements
    untaught in round 1, and only those can be diagnosed `untaught`."""
    import json

    from pwd_agent.exposures import round_ledger, total, v1_taught

    result = cli(*tiny_args(tiny_model, small_corpus, "prev", "--goal", "0.99", "--set", "loop.max_rounds=2", *NO_GUARD,
                            "--set", "train.repair_from=previous", "--set", "builder.v1_budget=0.5",
                            "--set", "builder.patch_exposures=4", "--set", "train.epochs=2"))
    assert result.returncode == 3, result.stderr

    ctx = open_run("prev")
    jobs = [json.loads((ctx.run_dir / "rounds" / f"{r:02d}" / "job.json").read_text()) for r in (1, 2)]
    with session_scope(ctx.db_url) as s:
        first, second = s.get(Round, 1), s.get(Round, 2)
        assert second.status == "evaluated"
        assert (first.parent_round, first.epochs) == (None, 2) and (second.parent_round, second.epochs) == (1, 2)
        assert jobs[0]["init_adapter"] is None and jobs[1]["init_adapter"] == first.adapter_path
        assert Path(jobs[1]["output_dir"]).resolve() != Path(first.adapter_path).resolve()

        before, after = round_ledger(s, 1, 2), round_ledger(s, 2, 2)
        assert after and all(total(after, node) >= total(before, node) for node in before)
        assert any(total(after, node) > total(before, node) for node in after)  # round 2 trained on something
        statements = set(s.exec(select(Statement.id)).all())
        taught = v1_taught(s, 0.5, ctx.config.builder.seed)
        assert len(taught) == -(-len(statements) // 2)
        unexposed = {sid for sid in statements if total(before, ("statement", sid)) == 0}
        assert unexposed >= statements - taught and statements - taught  # the budget left some untaught
        v1 = s.exec(select(Sample).where(Sample.origin == "v1", Sample.kind != "concept")).all()
        assert not [x.id for x in v1 if set(x.statement_ids) - taught]

        diagnoses = s.exec(select(Diagnosis).where(Diagnosis.round_id == 1)).all()
        assert diagnoses
        for d in diagnoses:
            if d.kind == "untaught":  # never trained on: every node it names has no round-1 exposure
                nodes = [("statement", i) for i in d.statement_ids] + [("concept", i) for i in d.concept_ids]
                assert nodes and all(total(before, node) == 0 for node in nodes), d.id
            else:
                assert d.kind in ("concept_gap", "chain_break", "item_suspect")


def test_goal_met_exits_zero(tiny_model, small_corpus):
    result = cli(*tiny_args(tiny_model, small_corpus, "easy", "--goal", "0", *NO_GUARD))
    assert result.returncode == 0, result.stderr
    assert "goal met" in result.stdout
    with session_scope(open_run("easy").db_url) as s:
        assert [r.id for r in s.exec(select(Round)).all()] == [0]

    refused = cli("resume", "easy", "--set", "student.lora_r=2")
    assert refused.returncode == 2 and "cannot change in a started run" in refused.stderr
    again = cli("resume", "easy", "--set", "loop.max_rounds=5", "-q")
    assert again.returncode == 0, again.stderr
    assert open_run("easy").config.loop.max_rounds == 5
    with session_scope(open_run("easy").db_url) as s:
        messages = [e.message for e in s.exec(select(Event)).all()]
        assert "config override on resume: loop.max_rounds 3 -> 5" in messages
        assert [r.id for r in s.exec(select(Round)).all()] == [0]  # a finished run stays finished


def test_sigkill_during_training_then_resume_redoes_nothing(tiny_model, small_corpus):
    args = tiny_args(tiny_model, small_corpus, "killed", "--goal", "0.99", "--set", "loop.max_rounds=1", *NO_GUARD,
                     "--set", "train.epochs=60")
    proc = subprocess.Popen([sys.executable, "-m", "pwd_agent", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    train_log = Path("runs/killed/rounds/01/train.log")
    deadline = time.time() + 120
    while not (train_log.is_file() and "step " in train_log.read_text()):
        assert time.time() < deadline and proc.poll() is None, "training never started"
        time.sleep(0.2)
    second = cli("resume", "killed")  # while the first process still drives the run
    assert second.returncode == 2 and "is being driven by another process" in second.stderr
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    ctx = open_run("killed")
    assert cli("status", "killed").stdout.splitlines()[0] == (
        "run killed: not running, its process died · continue: pwd-agent resume killed")
    with session_scope(ctx.db_url) as s:
        assert s.get(Round, 1).status == "training"
        run = s.get(Run, "killed")
        assert (run.status, run.stage, run.pid, run.finished_at) == ("running", "train", proc.pid, None)
        before = {"chains": len(s.exec(select(Chain)).all()), "items": len(s.exec(select(TestItem)).all()),
                  "samples": len(s.exec(select(Sample)).all()), "calls": len(s.exec(select(LLMCall)).all())}

    # The long training that was killed is redone shorter: a change named on resume, kept and logged.
    result = cli("resume", "killed", "-q", "--set", "train.epochs=2")
    assert result.returncode == 3, result.stderr
    with session_scope(ctx.db_url) as s:
        changes = [(c.key, c.old, c.new, c.how) for c in s.exec(select(ConfigChange)).all()]
        assert changes == [("train.epochs", 60.0, 2.0, "override on resume")]
        assert len(s.exec(select(Chain)).all()) == before["chains"]
        assert len(s.exec(select(TestItem)).all()) == before["items"]
        assert len(s.exec(select(Sample)).all()) == before["samples"]
        assert len(s.exec(select(LLMCall)).all()) == before["calls"]  # no agent call repeated
        n_chunks = len(s.exec(select(Chunk)).all())
        assert len(s.exec(select(WorkUnit).where(WorkUnit.stage == "extract")).all()) == n_chunks
        messages = [e.message for e in s.exec(select(Event)).all()]
        assert sum("chunks to extract" in m for m in messages) == 1  # extract ran once, before the kill
        assert sum(m.startswith("resuming run killed at train") for m in messages) == 1
        assert sum(m.startswith("round 1 trained") for m in messages) == 1
        assert s.get(Round, 1).status == "evaluated"
        assert len(s.exec(select(ItemResult).where(ItemResult.round_id == 1)).all()) == before["items"]
        run = s.get(Run, "killed")
        assert (run.status, run.stop_reason, run.goal_met) == ("finished", "max_rounds", False)
        assert run.pid != proc.pid and run.process_started_at > run.started_at and run.finished_at


def test_pause_at_a_node_boundary_then_set_applies_on_resume(tiny_model, small_corpus):
    """`pause` from another terminal stops the run between nodes (exit 6); a `set` sent while it
    ran is applied at the next boundary and logged; `resume` finishes under the changed config."""
    args = tiny_args(tiny_model, small_corpus, "paused", "--goal", "0.99", "--set", "loop.max_rounds=2", *NO_GUARD)
    proc = subprocess.Popen([sys.executable, "-m", "pwd_agent", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    from pwd_agent.runs import is_running

    deadline = time.time() + 60
    while not (Path("runs/paused/config.yaml").is_file() and is_running(open_run("paused"))):
        assert time.time() < deadline and proc.poll() is None, "the run never started"
        time.sleep(0.05)
    requested = cli("set", "paused", "loop.max_rounds=1")
    assert requested.returncode == 0 and "next node boundary" in requested.stdout
    assert cli("pause", "paused").returncode == 0
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 6 and "paused: run paused paused before" in err
    with session_scope(open_run("paused").db_url) as s:
        run = s.get(Run, "paused")
        assert run.status == "paused" and run.gate is None and run.finished_at is not None
    assert f"run paused: paused before {run.stage} on request · continue: pwd-agent resume paused" in cli(
        "status", "paused").stdout

    assert cli("pause", "paused").returncode == 2  # not running: nothing to pause
    assert cli("set", "paused", "student.lora_r=2").returncode == 2  # frozen key, refused at once
    result = cli("resume", "paused", "-q")
    assert result.returncode == 3, result.stderr
    with session_scope(open_run("paused").db_url) as s:
        messages = [e.message for e in s.exec(select(Event)).all()]
        assert [r.id for r in s.exec(select(Round)).all()] == [0, 1]  # max_rounds 1, set mid-run
    assert any(m.startswith("paused before ") for m in messages)
    assert "config set mid-run: loop.max_rounds 2 -> 1" in messages
    assert messages[-1] == "finished: max_rounds"
    with session_scope(open_run("paused").db_url) as s:
        changes = [(c.key, c.old, c.new, c.how) for c in s.exec(select(ConfigChange)).all()]
        assert changes == [("loop.max_rounds", 2, 1, "set mid-run")]
        assert s.get(Run, "paused").status == "finished"


def store_content(run_id: str) -> dict:
    """What a run produced, without row ids or timings: equal for equal runs."""
    with session_scope(open_run(run_id).db_url) as s:
        item_of = {d.id: d.item_id for d in s.exec(select(Diagnosis)).all()}  # patches named by their failed item
        patch_item = {p.id: item_of[p.diagnosis_id] for p in s.exec(select(Patch)).all()}
        return {
            "chains": sorted((c.process_name, tuple(c.steps)) for c in s.exec(select(Chain)).all()),
            "items": sorted((i.chain_id, i.variant, i.split, i.question, tuple(i.options), i.answer)
                            for i in s.exec(select(TestItem)).all()),
            "probes": sorted((p.target, p.node_id, p.answer) for p in s.exec(select(Probe)).all()),
            "samples": sorted((x.origin, x.kind, x.prompt, x.answer) for x in s.exec(select(Sample)).all()),
            "round_sets": sorted((m.round_id, m.sample_id, m.role) for m in s.exec(select(RoundSample)).all()),
            "results": sorted((r.round_id, r.item_id, r.predicted) for r in s.exec(select(ItemResult)).all()),
            "general": sorted((g.round_id, g.item_key, g.predicted) for g in s.exec(select(GeneralResult)).all()),
            "rounds": [(r.id, r.status, r.n_train, r.n_patch, r.n_replay, r.dev_acc, r.holdout_acc)
                       for r in s.exec(select(Round)).all()],
            "diagnoses": sorted((d.round_id, d.item_id, d.kind, d.judge_kind, tuple(d.statement_ids),
                                 tuple(d.concept_ids)) for d in s.exec(select(Diagnosis)).all()),
            "patches": sorted((patch_item[p.id], p.target_round, p.n_samples) for p in s.exec(select(Patch)).all()),
            "patch_samples": sorted((patch_item[x.patch_id], x.kind, x.prompt, x.answer)
                                    for x in s.exec(select(Sample).where(Sample.patch_id.is_not(None))).all()),
            "calls": sorted((c.agent, c.prompt_name, c.prompt_hash) for c in s.exec(select(LLMCall)).all()),
        }


@pytest.mark.extended  # test_sigkill_during_training_then_resume_redoes_nothing is the default run's kill test
def test_sigkill_at_five_points_then_resume_equals_an_uninterrupted_run(tiny_model, small_corpus):
    """SIGKILL in extract, build_tests, synthesize, mid-training, mid-evaluation, mid-diagnose and
    mid-patch, resuming each time: the final store equals an uninterrupted run's, and no agent unit
    was asked twice."""
    args = ["--goal", "0.99", "--set", "loop.max_rounds=2"]
    reference = cli(*tiny_args(tiny_model, small_corpus, "whole", *args))
    assert reference.returncode == 3, reference.stderr

    # diagnose:N is its "scoring probes" event then one per diagnosed item; patch:N one per stored patch.
    kill_points = ["extract:3", "build_tests:3", "synthesize:3", "train:3", "evaluate:2", "diagnose:3", "patch:2"]
    command = tiny_args(tiny_model, small_corpus, "cut", *args)
    for point in kill_points:
        env = {**os.environ, "PWD_AGENT_KILL_AT": point}
        died = subprocess.run([sys.executable, "-m", "pwd_agent", *command], env=env, capture_output=True,
                              text=True, timeout=300)
        assert died.returncode == -signal.SIGKILL, (point, died.returncode, died.stderr[-2000:])
        command = ["resume", "cut", "-q"]
    final = cli(*command)
    assert final.returncode == 3, final.stderr

    whole, cut = store_content("whole"), store_content("cut")
    for table in whole:
        assert cut[table] == whole[table], table
    assert len(cut["calls"]) == len(set(cut["calls"]))  # the ledger: no unit recorded twice
    with session_scope(open_run("cut").db_url) as s:
        events = s.exec(select(Event).order_by(Event.id)).all()
    resumed_at = [e.message for e in events if e.message.startswith("resuming run")]
    assert len(resumed_at) == len(kill_points)
    for node in ("diagnose", "patch"):  # the kill landed inside the stage: some units done, some not
        landed = last_event_before_resuming_at(events, node)
        assert 0 < landed.data["done"] < landed.data["total"], (node, landed.message)


def last_event_before_resuming_at(events: list, node: str):
    """The last event `node` recorded before the run resumed at it: where the kill struck."""
    at = next(k for k, e in enumerate(events) if e.message == f"resuming run cut at {node}")
    return next(e for e in reversed(events[:at]) if e.node == node)


def test_logs_follow_streams_a_live_run_and_stops_when_it_pauses(tiny_model, small_corpus):
    # Long enough that the first step line (at a tenth of the steps) arrives while the run trains; the
    # pause then waits for the training to end (it takes at a node boundary), so no longer than that.
    args = tiny_args(tiny_model, small_corpus, "live", "--goal", "0.99", "--set", "loop.max_rounds=1", *NO_GUARD,
                     "--set", "train.epochs=30")
    run = subprocess.Popen([sys.executable, "-m", "pwd_agent", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not Path("runs/live/run.db").is_file():
        assert time.time() < deadline and run.poll() is None, "the run never started"
        time.sleep(0.1)
    follow = subprocess.Popen([sys.executable, "-m", "pwd_agent", "logs", "live", "-f", "--json", "--node", "train"],
                              stdout=subprocess.PIPE, text=True)
    import json

    seen = []
    for line in follow.stdout:
        seen.append(json.loads(line))
        if seen[-1]["message"].startswith("step "):
            break
    assert run.poll() is None  # the step line arrived while the run was still training
    assert {e["node"] for e in seen} == {"train"} and all(e["level"] == "info" for e in seen)
    assert cli("pause", "live").returncode == 0
    assert run.wait(timeout=300) == 6
    follow.wait(timeout=30)  # the paused event ends the follow, though its node is filtered out
    assert follow.returncode == 0


def test_patch_gate_review_edit_then_the_edited_samples_train(tiny_model, small_corpus):
    """The run stops at the patch gate; review lists the patches; a bad edit is refused with its line
    and stores nothing; a good edit replaces the batch and the run goes on to train on it."""
    import json

    result = cli(*tiny_args(tiny_model, small_corpus, "gated", "--goal", "0.99", "--set", "loop.max_rounds=2",
                            *NO_GUARD, "--set", "gates.on_patch=true"))
    assert result.returncode == 6 and "waits at the on_patch gate" in result.stderr, result.stderr
    assert cli("resume", "gated").returncode == 6  # resume without an answer waits again
    assert ("run gated: waiting at the on_patch gate · continue: pwd-agent review gated"
            in cli("status", "gated").stdout)

    shown = cli("review", "gated", "--out", "patches.jsonl")
    assert shown.returncode == 0, shown.stderr
    with session_scope(open_run("gated").db_url) as s:
        patches = s.exec(select(Patch)).all()
        before = sorted((x.id, x.prompt, x.answer)
                        for x in s.exec(select(Sample).where(Sample.origin == "patch")).all())
    assert all(f"patch {p.id} <- diagnosis {p.diagnosis_id}" in shown.stdout for p in patches)
    rows = [json.loads(line) for line in Path("patches.jsonl").read_text().splitlines()]
    assert len(rows) == len(before)

    bad = Path("bad.jsonl")
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "answer": ""}) + "\n")
    refused = cli("review", "gated", "edit", "bad.jsonl")
    assert refused.returncode == 2 and "bad.jsonl line 2: answer" in refused.stderr
    with session_scope(open_run("gated").db_url) as s:
        assert sorted((x.id, x.prompt, x.answer)
                      for x in s.exec(select(Sample).where(Sample.origin == "patch")).all()) == before
    assert cli("review", "gated", "reject").returncode == 2  # a rejection needs its reason
    with session_scope(open_run("gated").db_url) as s:  # a key option of an order item, copied by a reviewer
        item = next(i for i in s.exec(select(TestItem).where(TestItem.variant == 0)).all())
        copied = item.options["ABCD".index(item.answer[0])]
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "answer": f"True. {copied}"}) + "\n")
    refused = cli("review", "gated", "edit", "bad.jsonl")
    assert refused.returncode == 2 and f"bad.jsonl line 2: the sample reproduces test item {item.id} (option " \
        in refused.stderr, refused.stderr
    with session_scope(open_run("gated").db_url) as s:
        assert sorted((x.id, x.prompt, x.answer)
                      for x in s.exec(select(Sample).where(Sample.origin == "patch")).all()) == before

    edited = [{**rows[0], "answer": "EDITED BY A REVIEWER. " + rows[0]["answer"]}, *rows[2:]]
    Path("patches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    done = cli("review", "gated", "edit", "patches.jsonl", "-q")
    assert done.returncode == 3, done.stderr  # trained round 2, stopped at max_rounds
    trained = [json.loads(line) for line in Path("runs/gated/rounds/02/train.jsonl").read_text().splitlines()]
    assert any(t["answer"].startswith("EDITED BY A REVIEWER.") for t in trained)
    assert not any(t["answer"] == rows[1]["answer"] and t["prompt"] == rows[1]["prompt"] for t in trained)  # dropped
    with session_scope(open_run("gated").db_url) as s:
        assert len(s.exec(select(Sample).where(Sample.origin == "patch")).all()) == len(edited)
        assert any(e.message.startswith("gate on_patch: edit") for e in s.exec(select(Event)).all())
    assert cli("review", "gated").returncode == 2  # nothing waits any more


def test_kb_gate_reject_stops_the_run_and_resume_asks_again(tiny_model, small_corpus):
    first = cli(*tiny_args(tiny_model, small_corpus, "kbgate", "--set", "gates.after_kb=true", *NO_GUARD))
    assert first.returncode == 6, first.stderr
    shown = cli("review", "kbgate")
    assert shown.returncode == 0 and "waits at the after_kb gate" in shown.stdout and "'chains':" in shown.stdout
    assert cli("review", "kbgate", "edit", "x.jsonl").returncode == 2  # edit is for the patch gate only
    rejected = cli("review", "kbgate", "reject", "--reason", "chains look thin")
    assert rejected.returncode == 3 and "rejected at the after_kb gate: chains look thin" in rejected.stderr
    with session_scope(open_run("kbgate").db_url) as s:
        assert not s.exec(select(TestItem)).all()  # nothing past the gate was built
        assert any(e.message == "gate after_kb: reject (chains look thin)" for e in s.exec(select(Event)).all())
    assert cli("resume", "kbgate").returncode == 6  # the gate asks again
