"""The run's state machine: build_graph(checkpointer) -> compiled LangGraph graph."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from pwd_agent.nodes.build_tests import build_tests
from pwd_agent.nodes.decide import decide
from pwd_agent.nodes.diagnose import diagnose
from pwd_agent.nodes.evaluate import evaluate
from pwd_agent.nodes.extract import extract
from pwd_agent.nodes.ingest import ingest
from pwd_agent.nodes.patch import patch
from pwd_agent.nodes.synthesize import synthesize
from pwd_agent.nodes.train import train
from pwd_agent.context import RunContext
from pwd_agent.state import RunState


def build_graph(checkpointer=None):
    builder = StateGraph(RunState, context_schema=RunContext)
    for node in (ingest, extract, build_tests, synthesize, train, evaluate, decide, diagnose, patch):
        builder.add_node(node.__name__, node)

    builder.add_edge(START, "ingest")
    builder.add_edge("ingest", "extract")  # the KB, top-down per chunk
    builder.add_edge("extract", "build_tests")  # unit tests exist before any training
    builder.add_edge("build_tests", "synthesize")  # source code from L1/L2
    builder.add_edge("synthesize", "train")  # round 0: the base model, nothing trained
    builder.add_edge("train", "evaluate")  # compile, then run the tests
    builder.add_edge("evaluate", "decide")  # decide routes with Command: train, diagnose or END
    builder.add_edge("diagnose", "patch")  # each failure traced to KB nodes, then patched
    builder.add_edge("patch", "train")  # next round, retrained from the base
    return builder.compile(checkpointer=checkpointer)


__all__ = ["build_graph", "studio_graph", "END"]


def studio_graph():
    """The graph for LangGraph Studio / `langgraph dev` (see langgraph.json): the server brings its
    own persistence, so no checkpointer here. Invoking it needs a RunContext (`open_run(id)`)."""
    return build_graph()
