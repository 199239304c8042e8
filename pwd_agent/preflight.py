"""Checks that run before any work: a run is refused up front, with a hint, rather than failing
an hour in (a missing optional package, a GPU backend without a GPU, a bad student)."""

from __future__ import annotations

import importlib.util

from pwd_agent.config import RunConfig
from pwd_agent.errors import ConfigError
from pwd_agent.evaluation.general import LM_EVAL, check_lm_eval


def check_run(cfg: RunConfig) -> None:
    """Everything `run` checks before it makes a run folder."""
    from pwd_agent.student import check_student

    check_store(cfg.db_url)
    check_backends(cfg)
    check_student(cfg.student, lora=cfg.train.method == "lora")  # the model, its chat layout, the LoRA targets


def check_store(db_url: str | None) -> None:
    """A PostgreSQL store: the extra is installed and the server answers (SQLite needs nothing)."""
    from pwd_agent.store import postgres

    if postgres.is_postgres(db_url):
        postgres.connect(db_url).close()  # checks the URL and the extra first


TRACKER_INSTALL = {"mlflow": "pip install 'pwd-agent[mlflow]'", "wandb": "pip install 'pwd-agent[wandb]'"}


def check_trackers(report_to: list[str]) -> None:
    """Refuse, before any work starts, a tracker whose package is missing."""
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"tracking.report_to names {name}, but {name} is not installed",
                              f"{TRACKER_INSTALL[name]}, or remove {name} from tracking.report_to")


def check_backends(cfg: RunConfig) -> None:
    """The trackers, training engine, evaluation backend and lm-eval guard tasks can run here (also
    checked on `resume --set` / `set`)."""
    check_trackers(cfg.tracking.report_to)
    if cfg.train.engine == "trl" and importlib.util.find_spec("trl") is None:
        raise ConfigError("train.engine=trl, but trl is not installed",
                          "pip install 'pwd-agent[trl]', or train.engine=own")
    if cfg.train.packing and cfg.train.engine != "trl":
        raise ConfigError("train.packing needs train.engine=trl",
                          "the own engine trains length-sorted, unpacked batches; set train.engine=trl to pack")
    if cfg.eval.backend == "vllm":
        check_vllm(cfg)
    if cfg.eval.general.startswith(LM_EVAL):
        if cfg.student.chat_template != "model":
            raise ConfigError("lm-eval applies the model's own chat template, and student.chat_template names another",
                              "use eval.general=builtin or a JSONL guard with a named chat layout")
        check_lm_eval(cfg.eval.general, cfg.eval.lm_eval_include_path)


def check_vllm(cfg: RunConfig) -> None:
    """eval.backend=vllm needs the package, a CUDA GPU (enough of them) and the letters scorer."""
    if cfg.eval.scorer != "letters":
        raise ConfigError(f"eval.scorer={cfg.eval.scorer} runs on the hf backend only",
                          "use eval.scorer=letters with eval.backend=vllm, or eval.backend=hf")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("eval.backend=vllm, but vllm is not installed",
                          "pip install 'pwd-agent[gpu]' on a CUDA machine (see the README's GPU install), "
                          "or eval.backend=hf")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("eval.backend=vllm needs a CUDA GPU, and torch sees none",
                          "use eval.backend=hf on this machine")
    if torch.cuda.device_count() < cfg.eval.tensor_parallel_size:
        raise ConfigError(f"eval.tensor_parallel_size={cfg.eval.tensor_parallel_size}, but only "
                          f"{torch.cuda.device_count()} GPU(s) are visible", "lower eval.tensor_parallel_size")
