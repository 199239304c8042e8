"""build_tests and synthesize read the store once per stage, not once per chain (bench/agent_throughput.py
found them quadratic in the KB's size), and give exactly what the per-chain reads gave."""

import random

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.schemas import KBConcept
from pwd_agent.config import load_config
from pwd_agent.nodes import build_tests as build_tests_module
from pwd_agent.nodes.build_tests import build_tests
from pwd_agent.nodes.extract import extract
from pwd_agent.nodes.ingest import ingest
from pwd_agent.phrasing import step_phrase
from pwd_agent.probes import concept_index, concept_probe
from pwd_agent.runs import create_run
from pwd_agent.store import Chain, Chunk, Document, Probe, TestItem, session_scope
from pwd_agent.store.queries import all_chain_steps, foreign_steps

from conftest import ROOT


def test_concept_probe_through_the_index_gives_the_sorted_scan_options():
    rng = random.Random(3)
    concepts = [KBConcept(id=i, term=f"t{i}", type="term", definition=f"definition {rng.randrange(40)}",
                          statement_ids=sorted(rng.sample(range(60), rng.randrange(1, 4)))) for i in range(1, 201)]
    linked = concept_index(concepts)
    for concept in concepts:
        assert concept_probe("D", concept, concepts, 7, linked) == concept_probe("D", concept, concepts, 7)


def test_foreign_steps_from_chains_read_once_match_the_per_chain_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    with session_scope(url) as s:
        s.add(Document(id=1, path="d.md", title="d", content_hash="h", n_chars=1))
        s.flush()
        s.add(Chunk(id=1, document_id=1, position=0, text="t", content_hash="c"))
        s.flush()
        for i in range(1, 41):
            s.add(Chain(id=i, chunk_id=1, process_name=f"p{i}", domain="d", summary="s", steps_hash=f"h{i}",
                        steps=[f"Then step {j} of process {i} happens." for j in range(3 + i % 4)]))
    with session_scope(url) as s:
        chains = all_chain_steps(s)
        for chain_id in range(1, 41):
            others = s.exec(select(Chain).where(Chain.id != chain_id).order_by(Chain.id)).all()
            picked = sorted(others, key=lambda c: (c.id * 2654435761 + chain_id) % 1000003)[:12]
            expected = [step_phrase(c.steps[(chain_id + c.id) % len(c.steps)]) for c in picked]  # the older read
            assert len(expected) == 12
            assert foreign_steps(s, chain_id) == expected
            assert foreign_steps(s, chain_id, chains=chains) == expected


def _stored_benchmark(tmp_path, name: str) -> tuple[list, list]:
    cfg = load_config(None, [f"corpus.path={ROOT / 'examples/invented/corpus'}", f"runs_dir={tmp_path}",
                             f"run_id={name}"])
    ctx = create_run(cfg)
    runtime, state = Runtime(context=ctx), {}
    for node in (ingest, extract, build_tests):
        state = {**state, **node(state, runtime)}
    with session_scope(ctx.db_url) as s:
        items = [(i.chain_id, i.variant, i.split, i.question, i.options, i.answer)
                 for i in s.exec(select(TestItem).order_by(TestItem.id)).all()]
        probes = [(p.chain_id, p.target, p.node_id, p.options, p.answer)
                  for p in s.exec(select(Probe).order_by(Probe.id)).all()]
    return items, probes


def test_build_tests_stores_what_the_per_chain_reads_stored(tmp_path, monkeypatch):
    items, probes = _stored_benchmark(tmp_path, "once")
    store_chain_items = build_tests_module.store_chain_items
    monkeypatch.setattr(build_tests_module, "store_chain_items",  # the older path: every read per chain
                        lambda ctx, chain_id, drafts, inputs, all_concepts, stored: store_chain_items(
                            ctx, chain_id, drafts, inputs, all_concepts))
    assert len(items) > 20 and len(probes) > 20
    assert _stored_benchmark(tmp_path, "per-chain") == (items, probes)
