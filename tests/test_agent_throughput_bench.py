"""bench/agent_throughput.py end to end on one tiny configuration, so the bench cannot rot: its endpoint
answers every agent validly, the run stops after synthesize, and a second call skips what is measured."""

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import agent_throughput  # noqa: E402


def test_endpoint_answers_pass_the_agents_checks_and_the_run_stops_after_synthesize(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--config", "world:16:4:sqlite", "--delay", "0.05"]
    assert agent_throughput.main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["chunks"] == 16 and row["chains"] == 12  # 12 processes in 4 documents
    stages = row["stages"]
    assert stages["extract"]["units"] == 16 and stages["build_tests"]["units"] == 12
    assert stages["synthesize"]["units"] == 12
    for stage in ("extract", "build_tests", "synthesize"):
        entry = stages[stage]
        assert entry["failed_units"] == 0, stage  # every answer passed the checks in code (quotes are spans)
        assert entry["calls"] >= entry["units"] and 0 < entry["share_of_ideal"] <= 1.2
        assert entry["cpu_ms_per_unit"] > 0
    assert stages["extract"]["calls"] == 16 + 2 * 12  # a chain, then its statements and concepts
    assert row["peak_rss_mb"] > 0 and row["store_mb"] > 0
    run_dir = tmp_path / "runs" / "world-16-4-sqlite-d0.05-r0"
    assert "paused before train on request" in (run_dir / "run.log").read_text()
    assert "| world | 16 | 12 | sqlite | 4 | extract |" in (tmp_path / "results.md").read_text()

    capsys.readouterr()
    assert agent_throughput.main(args) == 0  # measured already: skipped, the table written again
    assert "world:16" not in capsys.readouterr().out.split("| corpus")[0]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
