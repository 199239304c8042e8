"""The trainer, run as a subprocess per round: `python -m pwd_agent.training JOB.json`."""
