"""The graph LangGraph Studio opens (langgraph.json) is the run's graph, node for node."""

import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_langgraph_json_points_at_the_run_graph():
    spec = json.loads((ROOT / "langgraph.json").read_text())["graphs"]["pwd_agent"]
    path, name = spec.split(":")
    module = importlib.import_module(path.removeprefix("./").removesuffix(".py").replace("/", "."))
    graph = getattr(module, name)()
    nodes = set(graph.get_graph().nodes) - {"__start__", "__end__"}
    assert nodes == {"ingest", "extract", "build_tests", "synthesize", "train", "evaluate", "decide", "diagnose",
                     "patch"}
    mermaid = graph.get_graph().draw_mermaid()
    assert "diagnose --> patch" in mermaid and "patch --> train" in mermaid
