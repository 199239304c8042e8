"""RunContext: what every node receives (LangGraph runtime context), apart from how a run is found on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pwd_agent.config import RunConfig


@dataclass
class RunContext:
    """Read-only facts for the nodes (LangGraph runtime context): the config and where things go."""

    config: RunConfig
    run_dir: Path
    db_url: str

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def round_dir(self, round_id: int) -> Path:
        path = self.run_dir / "rounds" / f"{round_id:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path
