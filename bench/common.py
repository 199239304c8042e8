"""What the benches share: an adapter trained once per job and data, kept for the next run of a bench."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path


def train_once(cfg, data: Path, folder: Path, seed: int, init_adapter: str | None = None) -> bool:
    """Train round weights (an adapter, or a whole model with train.method=full) on `data` into
    folder/adapter with training seed `seed` (from `init_adapter`'s weights when given), unless the ones there
    was trained from this same job (folder/job.json) on these same bytes (the data hash the trainer
    writes into train_metrics.json). True when it trained."""
    from pwd_agent.nodes.train import die_with_parent, train_job, trainer_command

    job = train_job(cfg, data, folder / "adapter", seed=seed, init_adapter=init_adapter)
    saved, metrics = folder / "job.json", folder / "adapter" / "train_metrics.json"
    if saved.is_file() and metrics.is_file():
        same_job = json.loads(saved.read_text()) == job.model_dump(mode="json")
        same_data = json.loads(metrics.read_text())["data_hash"] == hashlib.sha256(data.read_bytes()).hexdigest()[:16]
        if same_job and same_data:
            return False
    # Weights of another job would mislead: a LoRA's adapter_config.json left beside a full model's files
    # makes the folder read as an adapter.
    shutil.rmtree(folder / "adapter", ignore_errors=True)
    saved.write_text(job.model_dump_json(indent=2))
    with open(folder / "train.log", "w") as log:
        # The trainer dies with the bench: a bench stopped by a signal leaves no training running on.
        subprocess.run(trainer_command(cfg.train, saved), stdout=log, stderr=subprocess.STDOUT, check=True,
                       preexec_fn=die_with_parent)
    return True
