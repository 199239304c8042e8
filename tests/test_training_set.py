"""A round's training set: V1 in round 1; patches plus replay (and random V1 when the replay pool is
short) in repair rounds. Built on a hand-made store: no model, no training."""

import random
from types import SimpleNamespace

import pytest
from sqlmodel import select

from pwd_agent.nodes.train import compose_training_set, replay_wanted, round_floor, warn_fallback
from pwd_agent.store import (
    Diagnosis, Event, Patch, Round, RoundSample, Sample, TestItem, session_scope,
)

from conftest import add_chain

FRACTION, SEED = 0.35, 0
N_PATCH = 7  # one diagnosis' patch samples, all teaching statement 1
WANTED = replay_wanted(N_PATCH, FRACTION)  # 13


def build_store(url: str, free: int, sharing: int) -> None:
    """V1: `free` samples on statement 2 (replayable) and `sharing` on statement 1 (what the patch
    teaches); round 1 trained on them; one patch for round 2."""
    with session_scope(url) as s:
        add_chain(s)
        s.flush()
        s.add(TestItem(id=1, chain_id=1, split="dev", question="q", options=["a", "b", "c", "d"], answer="A"))
        s.add_all(Round(id=r, status="evaluated") for r in (0, 1))
        s.add(Round(id=2, status="training"))
        taught = [2] * free + [1] * sharing
        random.Random(1).shuffle(taught)  # interleaved: the pool is not simply the first ids
        s.add_all(v1_sample(statement, i) for i, statement in enumerate(taught))
        s.flush()
        compose_training_set(s, 1, FRACTION, SEED)
        s.add(Diagnosis(id=1, round_id=1, item_id=1, kind="concept_gap", statement_ids=[1]))
        s.flush()
        s.add(Patch(id=1, diagnosis_id=1, target_round=2, n_samples=N_PATCH))
        s.flush()
        s.add_all(Sample(origin="patch", kind="qa", prompt=f"patch {i}", answer="a", chain_id=1, statement_ids=[1],
                         patch_id=1) for i in range(N_PATCH))


def v1_sample(statement_id: int, i: int) -> Sample:
    return Sample(origin="v1", kind="qa", prompt=f"v1 {i}", answer="a", chain_id=1, statement_ids=[statement_id])


def counts(url: str) -> tuple[int, int]:
    """(samples on statement 2, samples on statement 1) among the V1 samples."""
    with session_scope(url) as s:
        v1 = s.exec(select(Sample).where(Sample.origin == "v1")).all()
    return sum(x.statement_ids == [2] for x in v1), sum(x.statement_ids == [1] for x in v1)


def round_set(url: str, round_id: int) -> dict[str, list[Sample]]:
    """role -> the samples of that role in the round's set."""
    with session_scope(url) as s:
        rows = s.exec(select(RoundSample, Sample).join(Sample, Sample.id == RoundSample.sample_id)
                      .where(RoundSample.round_id == round_id)).all()
    out: dict[str, list[Sample]] = {}
    for member, sample in rows:
        out.setdefault(member.role, []).append(sample)
    return out


def ids_by_role(members: dict[str, list[Sample]]) -> dict[str, list[int]]:
    return {role: sorted(x.id for x in xs) for role, xs in members.items()}


def compose(url: str, round_id: int = 2) -> int:
    with session_scope(url) as s:
        return compose_training_set(s, round_id, FRACTION, SEED)


def round_sizes(url: str, round_id: int) -> tuple[int, int, int]:
    with session_scope(url) as s:
        row = s.get(Round, round_id)
        return row.n_patch, row.n_replay, row.n_train


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'run.db'}"


def test_round_one_trains_on_every_v1_sample(url):
    build_store(url, free=6, sharing=4)
    members = round_set(url, 1)
    assert set(members) == {"v1"} and len(members["v1"]) == 10
    assert round_sizes(url, 1) == (0, 0, 10)


def test_a_big_enough_pool_gives_exactly_the_wanted_replay_none_sharing_a_statement(url):
    build_store(url, free=20, sharing=10)
    assert counts(url) == (20, 10)
    assert compose(url) == 0  # no fallback needed
    members = round_set(url, 2)
    assert set(members) == {"patch", "replay"}
    assert len(members["patch"]) == N_PATCH and len(members["replay"]) == WANTED == 13
    assert all(1 not in x.statement_ids for x in members["replay"])  # the replay rule
    assert round_sizes(url, 2) == (N_PATCH, WANTED, N_PATCH + WANTED)


def test_a_short_pool_is_used_whole_then_filled_with_random_v1(url):
    build_store(url, free=5, sharing=20)
    assert compose(url) == WANTED - 5
    members = round_set(url, 2)
    assert len(members["replay"]) == 5 and all(x.statement_ids == [2] for x in members["replay"])  # the whole pool
    randoms = members["random"]
    assert len(randoms) == WANTED - 5 and all(x.origin == "v1" for x in randoms)
    assert not {x.id for x in randoms} & {x.id for x in members["replay"]}  # none chosen twice
    assert round_sizes(url, 2) == (N_PATCH, WANTED, N_PATCH + WANTED)  # n_replay counts replay + random

    warn_fallback(SimpleNamespace(db_url=url), 2, WANTED, WANTED, WANTED - 5)
    with session_scope(url) as s:
        event = s.exec(select(Event).where(Event.level == "warning")).one()
    assert event.node == "train" and event.data == {"pool": 5, "wanted": WANTED, "random_v1": WANTED - 5}
    assert "pool has 5 samples, 13 wanted; added 8 random V1 samples" in event.message


def test_the_fallback_draw_is_seeded(tmp_path):
    picks = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        build_store(url, free=5, sharing=20)
        compose(url)
        picks.append(sorted(x.prompt for x in round_set(url, 2)["random"]))
    assert picks[0] == picks[1]


def test_when_v1_is_too_small_everything_there_is_trains_without_error(url):
    build_store(url, free=3, sharing=4)
    assert compose(url) == 4
    members = round_set(url, 2)
    assert (len(members["patch"]), len(members["replay"]), len(members["random"])) == (N_PATCH, 3, 4)
    assert round_sizes(url, 2) == (N_PATCH, 7, N_PATCH + 7)


def test_composing_again_keeps_the_set_and_adds_nothing(url):
    build_store(url, free=5, sharing=20)
    assert compose(url) == WANTED - 5
    before = round_set(url, 2)
    assert compose(url) == 0 and compose(url, round_id=1) == 0
    after = round_set(url, 2)
    assert ids_by_role(after) == ids_by_role(before)
    assert round_sizes(url, 2) == (N_PATCH, WANTED, N_PATCH + WANTED)


def test_a_floor_tops_the_replay_up_so_the_round_trains_on_at_least_that_many(url):
    build_store(url, free=20, sharing=10)
    with session_scope(url) as s:
        floor = round_floor(s, "v1", 2)
        assert floor == 30 and round_floor(s, "patches", 2) == 0 and round_floor(s, 25, 2) == 25
        assert compose_training_set(s, 2, FRACTION, SEED, "v1") == 30 - N_PATCH - 20  # the pool of 20, then random
    members = round_set(url, 2)
    assert len(members["replay"]) == 20 and all(1 not in x.statement_ids for x in members["replay"])
    assert round_sizes(url, 2) == (N_PATCH, 30 - N_PATCH, 30)
    assert replay_wanted(N_PATCH, FRACTION, floor=5) == WANTED  # a floor below the ratio's mix changes nothing


def test_v1_plus_patches_replays_every_v1_sample_beside_the_patches(url):
    build_store(url, free=20, sharing=10)
    with session_scope(url) as s:
        floor = round_floor(s, "v1+patches", 2)
        assert floor == 30 + N_PATCH
        assert compose_training_set(s, 2, FRACTION, SEED, "v1+patches") == 0  # nothing drawn: no shortage to log
    members = round_set(url, 2)
    with session_scope(url) as s:
        v1 = set(s.exec(select(Sample.id).where(Sample.origin == "v1")).all())
    assert {x.id for x in members["replay"]} == v1 and "random" not in members
    assert round_sizes(url, 2) == (N_PATCH, 30, 30 + N_PATCH)


def test_v1_plus_patches_replays_all_of_v1_in_later_rounds_too_not_earlier_patches(url):
    """Round 3 under v1+patches: V1 plus round 3's patches; round 2's patch samples are not replayed in V1's
    place (the replay pool of later rounds holds them)."""
    build_store(url, free=20, sharing=10)
    with session_scope(url) as s:
        compose_training_set(s, 2, FRACTION, SEED, "v1+patches")
        s.add(Round(id=3, status="training"))
        s.add(Diagnosis(id=2, round_id=2, item_id=1, kind="concept_gap", statement_ids=[2]))
        s.flush()
        s.add(Patch(id=2, diagnosis_id=2, target_round=3, n_samples=3))
        s.flush()
        s.add_all(Sample(origin="patch", kind="qa", prompt=f"patch3 {i}", answer="a", chain_id=1, statement_ids=[2],
                         patch_id=2) for i in range(3))
        s.flush()
        floor = round_floor(s, "v1+patches", 3)
        assert floor == 30 + 3
        compose_training_set(s, 3, FRACTION, SEED, "v1+patches")
        v1 = set(s.exec(select(Sample.id).where(Sample.origin == "v1")).all())
    members = round_set(url, 3)
    assert {x.id for x in members["replay"]} == v1 and "random" not in members  # all of V1, no round-2 patch
    assert [x.prompt for x in members["patch"]] == ["patch3 0", "patch3 1", "patch3 2"]
    assert round_sizes(url, 3) == (3, 30, 33)
