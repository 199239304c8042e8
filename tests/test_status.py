"""`status` on a fixed store renders exactly this text."""

from pwd_agent.config import load_config
from pwd_agent.report.status import render_status
from pwd_agent.runs import create_run
from pwd_agent.store import Event, LLMCall, Round, session_scope

EXPECTED = """\
run fixed: stopped (max_rounds)
KB: 0 documents, 0 chunks, 0 chains, 0 statements, 0 concepts
tests: 0 dev, 0 holdout; goal 0.800 on holdout
training data: 0 V1, 0 patch; 0 dropped by the leakage gate

round  status     train patch replay   loss    dev holdout general  fixed broken      p
    0  evaluated      0     0      0      -  0.100   0.125   0.250      -      -      -
    1  evaluated     50     0      0  1.234  0.300   0.250   0.225      8      1  0.020

agent       calls cached failed  tokens in tokens out     cost
builder         2      1      0        300        120   0.0006
extractor       3      0      1        900        300   0.0015"""


def test_status_text_on_a_fixed_store(small_corpus):
    ctx = create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=fixed", "loop.goal=0.8"]))
    with session_scope(ctx.db_url) as s:
        s.add(Round(id=0, status="evaluated", dev_acc=0.1, holdout_acc=0.125, general_acc=0.25))
        s.add(Round(id=1, status="evaluated", n_train=50, train_loss=1.2341, dev_acc=0.3, holdout_acc=0.25,
                    general_acc=0.225, fixed=8, broken=1, still_failing=20, gain_p=0.0196))
        base = dict(prompt_version="1", prompt_hash="h", model="m")
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100, cost=0.0005, **base))
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100, cost=0.0005,
                      ok=False, error="steps repeat", **base))
        s.add(LLMCall(agent="extractor", prompt_name="extract/l3_chain", input_tokens=300, output_tokens=100, cost=0.0005, **base))
        s.add(LLMCall(agent="builder", prompt_name="builder/samples", input_tokens=150, output_tokens=60, cost=0.0006, **base))
        s.add(LLMCall(agent="builder", prompt_name="builder/samples", input_tokens=150, output_tokens=60, cache_hit=True, **base))
        s.add(Event(node="decide", level="info", message="stop after round 1: max_rounds", data={"reason": "max_rounds"}))
    assert render_status(ctx) == EXPECTED
