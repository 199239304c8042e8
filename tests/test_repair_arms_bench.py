"""bench/repair_arms.py's arm draws: equal budgets, the oracle's order, and a test share that keeps
items of some chains while every arm still draws from the whole KB; and the helper benches beside it
(option_parts, form_tokens)."""

import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import repair_arms  # noqa: E402


def world(chains: int = 8, per_chain: int = 5, share: float = 1.0):
    """A KB of `chains` x `per_chain` statements, the even ones taught, one dev item per statement."""
    statements = {c * per_chain + k: SimpleNamespace(chain_id=c) for c in range(chains) for k in range(per_chain)}
    kept = repair_arms.tested_chains(list(range(chains)), share)
    items = [SimpleNamespace(id=sid, chain_id=st.chain_id, split="dev", option_statements=[sid, None],
                             option_kinds=["key", "distractor"])
             for sid, st in statements.items() if st.chain_id in kept]
    return SimpleNamespace(statements=statements, taught={sid for sid in statements if sid % 2 == 0}, items=items,
                           tested={sid for sid, st in statements.items() if st.chain_id in kept})


def failures(setup):
    """Every tested untaught statement's item failed and was located on its key."""
    return [SimpleNamespace(kind="untaught", item_id=i.id, statement_ids=[i.id]) for i in setup.items
            if i.id not in setup.taught]


def test_tested_chains_is_seeded_and_keeps_at_least_one():
    assert repair_arms.tested_chains(list(range(8)), 1.0) == set(range(8))
    assert repair_arms.tested_chains(list(range(8)), 0.25) == repair_arms.tested_chains(list(range(8)), 0.25)
    assert len(repair_arms.tested_chains(list(range(8)), 0.25)) == 2
    assert len(repair_arms.tested_chains(list(range(8)), 0.01)) == 1


def test_every_arm_gets_the_targeted_budget_and_the_oracle_doses_what_the_failed_items_need():
    setup = world(share=0.25)
    v1 = SimpleNamespace(probes={str(sid): sid in setup.taught for sid in setup.statements})
    diagnoses = failures(setup)
    nodes = repair_arms.arm_nodes(setup, v1, diagnoses, seed=0, multiples=[2])
    budget = len(nodes["targeted"])
    assert budget == len(diagnoses) > 0
    assert len(nodes["random-node"]) == len(nodes["oracle"]) == len(nodes["wrong-target"]) == budget
    assert len(nodes["random-node-x2"]) == 2 * budget
    needed = {d.statement_ids[0] for d in diagnoses}
    assert set(nodes["oracle"]) == needed  # the ceiling: exactly the untaught keys of the failed items
    assert all(sid in setup.taught for sid in nodes["wrong-target"])  # their probes pass
    # random-node draws from the whole KB, not only the tested chains: over seeds it lands outside them
    drawn = {sid for seed in range(10) for sid in repair_arms.arm_nodes(setup, v1, diagnoses, seed, [])["random-node"]}
    assert drawn - setup.tested


def test_wrong_target_spends_the_whole_budget_when_few_probes_pass():
    setup = world(share=0.5)
    few = set(sorted(setup.taught)[:3])  # V1 passes only 3 probes, fewer than the budget
    v1 = SimpleNamespace(probes={str(sid): sid in few for sid in setup.statements})
    nodes = repair_arms.arm_nodes(setup, v1, failures(setup), seed=1, multiples=[])
    assert len(nodes["wrong-target"]) == len(nodes["targeted"]) > len(few)
    assert set(nodes["wrong-target"]) == few  # every passing statement, some drawn twice (the writer caps them)
    assert nodes == repair_arms.arm_nodes(setup, v1, failures(setup), seed=1, multiples=[])  # seeded
    # what V1 passes moves wrong-target's draw and no other arm's (kept arms of a seed stay valid)
    many = SimpleNamespace(probes={str(sid): sid in setup.taught for sid in setup.statements})
    other = repair_arms.arm_nodes(setup, many, failures(setup), seed=1, multiples=[2])
    assert other["random-node"] == nodes["random-node"] and other["oracle"] == nodes["oracle"]


def test_the_oracle_fills_its_budget_from_the_tested_chains_first():
    setup = world(share=0.25)
    v1 = SimpleNamespace(probes={str(sid): sid in setup.taught for sid in setup.statements})
    diagnoses = failures(setup)[:2]
    diagnoses.append(SimpleNamespace(kind="chain_break", item_id=-1, statement_ids=[0, 2, 4]))  # taught ones
    nodes = repair_arms.arm_nodes(setup, v1, diagnoses, seed=3, multiples=[])
    assert len(nodes["oracle"]) == len(nodes["targeted"]) == 5
    untaught_tested = {sid for sid in setup.tested if sid not in setup.taught}
    assert set(nodes["oracle"]) <= untaught_tested  # 2 needed, then the tested chains' other untaught ones
    assert {d.statement_ids[0] for d in diagnoses[:2]} <= set(nodes["oracle"])


def test_the_verdict_and_the_efficiency_line_without_a_targeted_arm():
    """The arms may run without targeted (a writer tried on the oracle and random-node alone): the
    verdict still judges the oracle, and says no targeted arm ran."""
    beats = {"items_up": 9, "items_down": 1, "items_p": 0.011}
    summary = {"oracle vs random-node": beats, "targeted vs": {}, "arms": {}}
    assert repair_arms.verdict(summary) == ("the oracle beats random-node (holdout items 9 up / 1 down, sign test "
                                            "p 0.011); no targeted arm ran")
    assert repair_arms.verdict(dict(summary, **{"oracle vs random-node": dict(beats, items_p=0.3)})).startswith(
        "inconclusive")
    assert repair_arms.efficiency({"oracle": {"holdout_acc": 0.3, "patch_samples": 9}}) == "no targeted arm ran"
    assert repair_arms.regime(SimpleNamespace(train=SimpleNamespace(repair_from="previous"), builder=SimpleNamespace(
        patch_fraction=0.7, patch_wordings="forward"))) == "previous-pf0.7-forward"


def test_the_bench_s_efficiency_line_reads_the_untaught_key_items():
    """The repair bench's own line uses the read pool_arms registers: a random arm that matches
    targeted on all holdout items but not on the untaught-key ones does not match it."""
    means = {"targeted": {"holdout_acc": 0.5, "holdout_untaught_acc": 0.4, "patch_samples": 90},
             "random-node-x2": {"holdout_acc": 0.6, "holdout_untaught_acc": 0.3, "patch_samples": 180},
             "random-node-x4": {"holdout_acc": 0.5, "holdout_untaught_acc": 0.4, "patch_samples": 360}}
    assert repair_arms.efficiency(means).startswith("random-node-x4 (360 patch samples) matches targeted")
    del means["random-node-x4"]
    assert repair_arms.efficiency(means).startswith("no random-node arm reached targeted's untaught-key accuracy 0.4")


def test_the_trace_names_why_an_item_fails_when_its_probes_pass():
    """A failed item whose located statements' probes pass: the trace says whether the dose raised the
    key (and which distractor still wins) or lowered it, and carries the mass and the options picked."""
    item = SimpleNamespace(id=5, option_kinds=["wrong_order", "key", "skipped_step", "wrong_order"])
    setup = SimpleNamespace(items=[item], ledger={})
    diagnoses = [SimpleNamespace(item_id=5, kind="untaught", statement_ids=[7])]
    v1 = SimpleNamespace(items={"5": [False, 0.01, "A"]}, probes={"7": False})

    def link(mass: float, picked: str, probe: bool = True, passed: bool = False) -> dict:
        after = SimpleNamespace(items={"5": [passed, mass, picked]}, probes={"7": probe})
        return repair_arms.trace(setup, diagnoses, v1, after, Counter({7: 9}), 3)[0]

    row = link(0.2, "A")
    assert row["link"] == ("probes pass, item still fails: the key gained mass, the distractor picked before still "
                           "outweighs it")
    assert row["key_mass"] == [0.01, 0.2] and row["chose"] == ["wrong_order", "wrong_order"]
    assert row["nodes"] == [{"statement": 7, "samples": 9, "exposures": [0, 27], "probe": [False, True]}]
    assert link(0.2, "C")["link"].endswith("another distractor still outweighs it")
    assert link(0.001, "C")["link"].startswith("probes pass, item still fails: the key lost mass")
    assert link(0.2, "A", probe=False)["link"] == "dose did not teach: a located node still fails its probe"
    assert link(0.9, "B", passed=True)["link"] == "fixed" and link(0.9, "B", passed=True)["chose"][1] == "key"


def test_option_parts_splits_an_order_claim_and_ranks_the_key_by_each_part():
    """bench/option_parts.py: an option "Right after X, Y." splits into its X part and Y part; the key
    ranks first by the part that is highest for it; the key's own reversal is found among the options."""
    import option_parts

    steps = ["the pans fill", "the fire is lit", "the salt dries, ready for the store"]
    assert option_parts.parts("Right after the pans fill, the fire is lit.", steps) == (
        "Right after the pans fill,", " the fire is lit.")
    # A step that holds ", " itself: X is the known step, not the text before the first comma.
    assert option_parts.parts("Right after the salt dries, ready for the store, the pans fill.", steps) == (
        "Right after the salt dries, ready for the store,", " the pans fill.")
    assert option_parts.parts("The fire is lit.", steps) is None
    assert option_parts.parts("Right after an unknown step, the fire is lit.", steps) is None
    a, b = "the fire is lit", "the salt dries, ready for the store"
    options = [f"Right after {a}, {b}.", f"Right after {b}, {a}.", "Right after c, d.", "Right after d, e."]
    item = SimpleNamespace(id=1, options=options, option_kinds=["key", "wrong_order", "wrong_order", "skipped_step"])
    scored = {1: [{"all": -1.0, "x": -3.0, "y": -0.5}, {"all": -2.0, "x": -1.0, "y": -3.0},
                  {"all": -1.5, "x": -2.0, "y": -1.0}, {"all": -4.0, "x": -4.0, "y": -4.0}]}
    got = option_parts.ranks([item], scored, [a, b, "c", "d", "e"])
    assert got == {"items": 1, "key_first_all": 1.0, "key_first_y": 1.0, "key_first_x": 0.0, "reversal_items": 1,
                   "key_above_reversal": 1.0}


class WordTokenizer:
    """One token per whitespace-separated word: enough for the trainer's encode to count loss tokens."""
    eos_token = "</s>"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [hash(w) % 1000 for w in text.split()]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "user: " + messages[0]["content"] + " assistant:"


def test_form_tokens_counts_every_token_of_a_walk_and_the_answer_only_of_a_question():
    """bench/form_tokens.py: the forms get the same samples per node; their loss tokens differ, counted
    as the trainer does (a plain-text walk: every token but the first; a chat sample: its answer)."""
    import form_tokens
    from pwd_agent.schemas import KBChain, KBStatement, SampleDraft

    chain = KBChain(id=1, process_name="Salt boiling", domain="Crafts", summary="s.",
                    steps=["The pans fill.", "The fire is lit.", "The brine boils.", "The salt dries."])
    sts = {10 + k: KBStatement(id=10 + k, chain_id=1, position=k, subject=a, predicate="then", object=b,
                               source_quote="q")
           for k, (a, b) in enumerate([("the pans fill", "the fire is lit"), ("the fire is lit", "the brine boils"),
                                       ("the brine boils", "the salt dries")])}
    setup = SimpleNamespace(chains={1: chain}, statements=sts, taught={10})
    # 72 exposures at 6 epochs ask 12 samples a node; the taught node has 12 less V1's 3 wordings left.
    cfg = SimpleNamespace(builder=SimpleNamespace(patch_exposures=72, paraphrases=3, patch_wordings="both"),
                          train=SimpleNamespace(epochs=6))
    doses = form_tokens.form_doses(cfg, setup, [10, 11], ("both", "text"))
    for form in ("both", "text"):
        assert [sum(d.statement_ids == [sid] for d in doses[form]) for sid in (10, 11)] == [9, 12]
    tok = WordTokenizer()
    walk = SampleDraft(kind="text", prompt="", answer="In salt boiling, the pans fill.", statement_ids=[10])
    qa = SampleDraft(kind="qa", prompt="What comes next?", answer="The fire is lit.", statement_ids=[10])
    # (the eos joins the last word here, so a walk of six words is six tokens)
    assert form_tokens.loss_tokens(tok, [walk], 384) == 6 - 1  # every token but the first
    assert form_tokens.loss_tokens(tok, [qa], 384) == 4  # the answer's four, none of the prompt's
    assert form_tokens.loss_tokens(tok, doses["text"], 384) > form_tokens.loss_tokens(tok, doses["both"], 384)


def test_pool_arms_pairs_two_arms_only_on_the_seeds_both_have():
    import pool_arms

    assert "wrong-target" in pool_arms.ARMS
    item = lambda ok: {"7": [ok, 0.0, "A"]}  # noqa: E731
    world = {"holdout": [("7", True)],
             "scores": {"oracle": {1: item(True), 2: item(False)},
                        "random-node": {0: item(True), 1: item(False), 2: item(False)}, "none": {}}}
    # seed 0 has no oracle: it must not count, or random-node's seed-0 pass would drag the mean down
    assert pool_arms.item_diffs(world, "oracle", "random-node") == [(0.5, True)]
    assert pool_arms.item_diffs(world, "oracle", "none") == []


def test_pool_arms_reads_a_run_s_own_seeds_and_names_the_fix_for_a_bad_spec():
    import pool_arms

    assert pool_arms.parse_spec("arms-w41:previous-pf0.7-text:0.25:1,2", [0]) == (
        "arms-w41", "previous-pf0.7-text", 0.25, [1, 2])
    assert pool_arms.parse_spec("arms-w11", [0, 1]) == ("arms-w11", "base", 1.0, [0, 1])
    for bad in ("arms-w41:base:0.25:one", "arms-w41:base:0.25:1:2", ":base"):
        with pytest.raises(SystemExit, match="RUN_ID|seeds integers"):
            pool_arms.parse_spec(bad, [0])


def test_pool_arms_finds_the_multiples_and_averages_each_arm_over_its_own_seeds(tmp_path):
    import pool_arms

    for name in ("random-node-x4-2", "random-node-x2-2", "random-node-x2-1", "targeted-2", "notes"):
        (tmp_path / name).mkdir()
    assert pool_arms.arm_names(tmp_path) == [*pool_arms.ARMS, "random-node-x2", "random-node-x4"]
    assert pool_arms.arm_names(tmp_path / "missing") == list(pool_arms.ARMS)
    item = lambda *oks: {str(k): [ok, 0.0, "A"] for k, ok in enumerate(oks)}  # noqa: E731
    world = {"run": "w", "holdout": [("0", True), ("1", True), ("2", False)],
             "scores": {"targeted": {1: item(True, False, True), 2: item(True, True, False)}, "oracle": {}}}
    assert pool_arms.accuracies(world, "targeted") == {"seeds": [1, 2], "holdout": round(4 / 6, 3),
                                                       "untaught key": 0.75, "taught key": 0.5}
    assert pool_arms.accuracies(world, "oracle") is None
    assert "| w | targeted | 1,2 | 0.667 | 0.75 | 0.5 |" in pool_arms.markdown([world], [])


def test_pool_arms_reads_the_sample_efficiency_ratio_on_the_untaught_key_items():
    """The ratio is the smallest K whose random-node arm reaches targeted on the untaught-key items
    (the taught-key item does not count); it is a verdict only where the oracle beats random-node."""
    import pool_arms

    item = lambda *oks: {str(k): [ok, 0.0, "A"] for k, ok in enumerate(oks)}  # noqa: E731
    holdout = [(str(k), True) for k in range(6)] + [("6", False)]
    arms = {"targeted": (1, 1, 1, 1, 0, 0, 0), "oracle": (1, 1, 1, 1, 1, 1, 0),
            "random-node": (0, 0, 0, 0, 0, 0, 1), "random-node-x2": (1, 0, 0, 0, 0, 0, 1),
            "random-node-x4": (1, 1, 1, 0, 1, 0, 1)}
    world = {"run": "w", "holdout": holdout, "scores": {a: {1: item(*map(bool, oks))} for a, oks in arms.items()}}
    read = pool_arms.efficiency([world], pool_arms.pair_tests([world]))
    assert read["ratio"] == "4" and [r["K"] for r in read["by K"]] == [1, 2, 4]
    assert read["by K"][0] == {"K": 1, "arm": "random-node", "accuracy": 0.0, "targeted": round(4 / 6, 3),
                               "targeted above": 0.0625, "random above": 1.0}
    assert read["oracle vs random-node p"] == 0.0156 and read["verdict"] == "counts"
    assert "Sample-efficiency ratio (smallest K not below targeted): 4" in pool_arms.markdown(
        [world], pool_arms.pair_tests([world]))
    # A second run without the x4 arm: x4 is set beside targeted on the first run's items only.
    other = {"run": "v", "holdout": [("0", True), ("1", True)],
             "scores": {**{a: {} for a in arms}, "targeted": {1: item(True, True)},
                        "random-node": {1: item(False, True)}}}
    rows = {r["arm"]: r for r in pool_arms.efficiency([world, other], pool_arms.pair_tests([world, other]))["by K"]}
    assert rows["random-node-x4"]["targeted"] == round(4 / 6, 3) and rows["random-node"]["targeted"] == 0.75
    assert read["significant bound"].startswith("none")  # targeted above random-node: 4 / 0, p 0.0625
    strong = {"run": "s", "holdout": holdout, "scores": {a: {1: item(*map(bool, oks))} for a, oks in {
        "targeted": (1,) * 6 + (0,), "random-node": (0,) * 7, "random-node-x2": (0,) * 7,
        "random-node-x4": (1,) * 6 + (0,)}.items()}}
    assert pool_arms.efficiency([strong], pool_arms.pair_tests([strong]))["significant bound"] == "> 2"
    del world["scores"]["random-node-x4"]
    world["scores"]["oracle"] = {1: item(*map(bool, arms["random-node"]))}
    read = pool_arms.efficiency([world], pool_arms.pair_tests([world]))
    assert read["ratio"] == "> 2" and read["verdict"].startswith("inconclusive")


def test_pool_arms_reads_another_scorer_s_outcomes_beside_the_bench_s_own(tmp_path):
    import json

    import pool_arms

    for folder, own, pmi in (("v1-1", False, True), ("base/targeted-1", True, False)):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "scores.json").write_text(json.dumps({"items": {"7": [own, 0.5, "A"]}}))
        (tmp_path / folder / "scores-pmi.json").write_text(json.dumps({"items": {"7": [pmi, 0.5, "A"]}}))
    assert pool_arms.arm_scores(tmp_path, "base", "none", [1, 2]) == {1: {"7": [False, 0.5, "A"]}}
    assert pool_arms.arm_scores(tmp_path, "base", "none", [1], "pmi") == {1: {"7": [True, 0.5, "A"]}}
    assert pool_arms.arm_scores(tmp_path, "base", "targeted", [1], "pmi") == {1: {"7": [False, 0.5, "A"]}}
    assert pool_arms.arm_scores(tmp_path, "base", "targeted", [1], "sum") == {}  # never scored: left out

def test_anchor_items_open_every_option_on_the_key_s_first_step():
    import anchor_items

    steps = ["a", "b", "c", "d", "e", "f"]
    # X = c (position 2), Y = d: the step after Y (e), the step before X (b), then the nearest other (f, not a)
    assert anchor_items.anchor_options(steps, 2) == ["Right after c, d.", "Right after c, e.", "Right after c, b.",
                                                     "Right after c, f."]
    # the first pair: no step before it, so the step after Y and the nearest others
    assert anchor_items.anchor_options(steps, 0) == ["Right after a, b.", "Right after a, c.", "Right after a, d.",
                                                     "Right after a, e."]
    assert anchor_items.anchor_options(steps, 5) is None  # the last step has no next one
    assert anchor_items.anchor_options(steps[:4], 1) is None  # too few steps for three distractors
    assert anchor_items.arm_of("v1-2") == ("none", 2)
    assert anchor_items.arm_of("previous-pf0.7-text/oracle-1") == ("oracle", 1)
    by_arm = {"oracle": {1: {"7": True, "8": True}, 2: {"7": True, "8": False}},
              "random-node": {1: {"7": False, "8": True}, 2: {"7": False, "8": True}}}
    anchored = [{"id": "7", "untaught": True}, {"id": "8", "untaught": False}]
    (row,) = anchor_items.sign_tests(by_arm, anchored)
    assert (row["untaught key"]["up"], row["untaught key"]["down"]) == (1, 0)
    assert (row["taught key"]["up"], row["taught key"]["down"]) == (0, 1)  # 0.5 - 1.0 averaged over seeds


def test_anchor_items_scorers_read_the_step_named_next_three_ways():
    import anchor_items

    assert anchor_items.neutral_options(["Right after c, d.", "Right after c, the e, f."], "c") == [
        "Right after that, d.", "Right after that, the e, f."]
    # a first step that holds a comma itself is cut whole, not at its own comma
    assert anchor_items.neutral_options(["Right after the pans, now hot, fill, d."], "the pans, now hot, fill") == [
        "Right after that, d."]
    # the key (option 0) is short and likely after X; option 1 is long, fluent anywhere, likelier in total
    logliks = [(-4.0, 2), (-3.0, 6)]
    neutral = [(-9.0, 2), (-2.5, 6)]
    assert anchor_items.choices(logliks, neutral) == {"mean": False, "sum": False, "pmi": True}


def test_repair_groups_reads_where_a_repair_gain_comes_from(tmp_path):
    """bench/repair_groups.py on a small store: statement 1 taught by V1, statement 2 dosed by the
    repair; the taught item the repair broke chose the dosed statement's step."""
    import repair_groups
    from pwd_agent.store import (Diagnosis, ItemResult, Round, RoundSample, Sample, Statement, TestItem,
                                 session_scope)

    from conftest import add_chain

    url = f"sqlite:///{tmp_path / 'run.db'}"
    steps = ("a", "b", "c", "d")
    with session_scope(url) as s:
        add_chain(s, steps)
        for i in (1, 2, 3):
            s.add(Statement(id=i, chain_id=1, position=i - 1, subject=steps[i - 1], predicate="then",
                            object=steps[i], source_quote="q", spo_key=f"k{i}"))
        s.add_all(Round(id=r, status="evaluated", epochs=2) for r in (0, 1, 2))
        s.add(Sample(id=1, origin="v1", kind="qa", prompt="p", answer="a", chain_id=1, statement_ids=[1]))
        s.add(Sample(id=2, origin="v1", kind="concept", prompt="p2", answer="a", chain_id=1, statement_ids=[3]))
        s.flush()
        s.add_all(RoundSample(round_id=1, sample_id=i, role="v1") for i in (1, 2))
        opts = {1: ["Right after a, b.", "Right after a, c.", "Right after a, d.", "Right after a, a2."],
                2: ["Right after b, c.", "Right after b, d.", "Right after b, a.", "Right after b, b2."],
                3: ["Right after c, d.", "Right after c, a.", "Right after c, b.", "Right after c, c2."]}
        for i, options in opts.items():
            for split, offset in (("dev", 0), ("holdout", 10)):
                s.add(TestItem(id=i + offset, chain_id=1, variant=i + offset, split=split, question="q",
                               options=options, option_kinds=["key", "x", "x", "x"],
                               option_statements=[i, None, None, None], answer="A"))
        s.flush()
        s.add(Diagnosis(round_id=1, item_id=2, kind="untaught", statement_ids=[2], concept_ids=[], evidence={},
                        confidence=1.0))
        # Round 1 (V1) passes the taught items only; round 2 fixes the dosed ones and breaks the
        # taught holdout item, which picks "Right after a, c.": c is the dosed statement's object.
        picks = {0: {1: "B", 2: "A", 3: "B", 11: "B", 12: "B", 13: "A"},
                 1: {1: "A", 2: "B", 3: "B", 11: "A", 12: "B", 13: "B"},
                 2: {1: "A", 2: "A", 3: "B", 11: "B", 12: "A", 13: "B"}}
        for r, by_item in picks.items():
            s.add_all(ItemResult(round_id=r, item_id=i, raw="", predicted=p, passed=p == "A", scorer="options",
                                     prompt_version="v")
                      for i, p in by_item.items())
    with session_scope(url) as s:
        report = repair_groups.groups_report(s, 2)
    assert (report["taught"], report["dosed"]) == (1, 1)  # a concept sample does not teach statement 3
    hold = report["splits"]["holdout"]
    assert hold["taught"] == {"items": 1, "accuracy": {0: 0.0, 1: 1.0, 2: 0.0}, "fixed": 0, "broken": 1, "p": 1.0,
                              "vs_round0": {"fixed": 0, "broken": 0, "p": 1.0}}
    assert (hold["dosed"]["fixed"], hold["dosed"]["broken"]) == (1, 0)
    assert hold["dosed"]["vs_round0"]["fixed"] == 1  # failing at the base too: not just round 1's selection
    assert (hold["neither"]["items"], hold["neither"]["fixed"], hold["neither"]["vs_round0"]["broken"]) == (1, 0, 1)
    # One of the item's three wrong options names a dosed step: 1/3 expected, p = 1/3.
    assert report["taught_key_broken"] == {"broken": 1, "chose_dosed_step": 1, "wrong_options": 3,
                                           "wrong_options_dosed": 1, "expected": 0.33, "p": 0.3333}
    assert repair_groups.at_least(2, [0.5, 0.5]) == 0.25 and repair_groups.at_least(0, [0.2]) == 1.0


def test_pool_arms_record_round_trips_the_holdout_outcomes_and_refuses_a_bad_one(tmp_path):
    import pool_arms

    item = lambda *oks: {str(k): [ok, 0.1, "A"] for k, ok in enumerate(oks)}  # noqa: E731
    world = {"run": "arms-w9:previous-pf0.7-text:0.25:1,2", "holdout": [("0", True), ("2", False)],
             "scores": {"targeted": {1: item(True, False, True), 2: item(False, True, True)},
                        "random-node": {1: item(False, True, False)}, "oracle": {}},
             "digests": {"targeted": {"1": {"data": "ab", "adapter": "cd"}}}}
    path = pool_arms.export_record(world, "options", tmp_path)
    assert path.name == "arms-w9_previous-pf0.7-text_0.25.json"
    back = pool_arms.load_world(str(path), [0], "options")
    # only the holdout items travel (item "1" is a dev item here), and the seeds come back as integers
    assert back["scores"]["targeted"] == {1: {"0": [True, 0.1, "A"], "2": [True, 0.1, "A"]},
                                          2: {"0": [False, 0.1, "A"], "2": [True, 0.1, "A"]}}
    assert back["holdout"] == world["holdout"] and back["run"] == world["run"]
    assert back["digests"] == world["digests"]  # what a rebuild checks its arms against
    assert pool_arms.pair_tests([back]) == pool_arms.pair_tests([world])
    with pytest.raises(SystemExit, match="--scorer options"):
        pool_arms.load_world(str(path), [0], "pmi")
    (tmp_path / "bad.json").write_text('{"version": 1, "run": "x"}')
    with pytest.raises(SystemExit, match="not a pool_arms record"):
        pool_arms.load_world(str(tmp_path / "bad.json"), [0], "options")
    with pytest.raises(SystemExit, match="no such record"):
        pool_arms.load_world(str(tmp_path / "missing.json"), [0], "options")
    assert not list(tmp_path.glob("*.tmp"))


def test_arm_breaks_splits_the_untaught_key_items_by_whether_the_arm_dosed_the_key():
    import arm_breaks

    item = lambda split, key: SimpleNamespace(split=split, option_kinds=["wrong_order", "key"],  # noqa: E731
                                              option_statements=[99, key])
    # keys: 1 dosed and untaught, 2 untaught and not dosed, 3 taught by V1 (left out), 4 a dev item
    items = {1: item("holdout", 1), 2: item("holdout", 2), 3: item("holdout", 3), 4: item("dev", 1),
             5: item("holdout", 1)}
    v1 = {"1": [False, 0, "A"], "2": [True, 0, "B"], "3": [True, 0, "B"], "4": [False, 0, "A"],
          "5": [True, 0, "B"]}
    arm = {"1": [True, 0, "B"], "2": [False, 0, "A"], "3": [False, 0, "A"], "4": [True, 0, "B"],
           "5": [True, 0, "B"]}
    got = arm_breaks.by_key(items, v1, arm, dosed={1}, taught={3})
    assert got == {"key_dosed": {"items": 2, "v1": 0.5, "arm": 1.0, "up": 1, "down": 0},
                   "key_not_dosed": {"items": 1, "v1": 1.0, "arm": 0.0, "up": 0, "down": 1}}


def test_arm_breaks_reads_no_pull_toward_dosed_options_where_distractors_name_no_statement():
    import arm_breaks

    anchored = SimpleNamespace(split="holdout", option_kinds=["wrong_order", "key"], option_statements=[None, 1])
    built = SimpleNamespace(split="holdout", option_kinds=["wrong_order", "key"], option_statements=[2, 1])
    v1, arm = {"1": [True, 0, "B"]}, {"1": [False, 0, "A"]}
    assert arm_breaks.arm_breaks({1: anchored}, v1, arm, dosed={2})["broken_chose_dosed"] is None
    got = arm_breaks.arm_breaks({1: built}, v1, arm, dosed={2})
    assert (got["broken_chose_dosed"], got["broken_expected"]) == (1, 1.0)
