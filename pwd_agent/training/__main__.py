"""Entry point: `python -m pwd_agent.training JOB.json` trains one LoRA adapter and exits."""

import sys
from pathlib import Path

from pwd_agent.training.job import TrainJob
from pwd_agent.training.trainer import train

if len(sys.argv) != 2:
    sys.exit("usage: python -m pwd_agent.training JOB.json")
job = TrainJob.model_validate_json(Path(sys.argv[1]).read_text())
if job.engine == "trl":
    from pwd_agent.training.trl_engine import train_trl

    train_trl(job)
else:
    train(job)
