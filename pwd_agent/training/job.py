"""A training job: everything the trainer subprocess needs, written as JOB.json by the train node."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pwd_agent.config import StudentConfig, TrainConfig

# The settings a job copies from the run config by name; their defaults are the config's own, so
# they are declared once (config.py).
STUDENT_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "max_length", "chat_template", "dtype")
TRAIN_KEYS = ("method", "epochs", "learning_rate", "batch_size", "grad_accum", "seed", "threads", "cpu_bf16", "engine",
              "packing", "heldout_share", "patience")


def _default(section: type[BaseModel], key: str):
    return section.model_fields[key].get_default(call_default_factory=True)


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str
    data_path: str  # JSONL of {"prompt", "answer"}
    output_dir: str  # the round's weights are saved here: a PEFT adapter, or the whole model (method full)
    config_hash: str = ""
    # The weights training continues from instead of a fresh start (a repair round trained on top of the previous
    # round): a PEFT adapter folder (method lora), or a full-model folder (method full). Set by the caller, not a
    # config key copied by name; None trains a fresh LoRA on model_path (or every weight of model_path).
    init_adapter: str | None = None
    # student.*
    lora_r: int = _default(StudentConfig, "lora_r")
    lora_alpha: int = _default(StudentConfig, "lora_alpha")
    lora_dropout: float = _default(StudentConfig, "lora_dropout")
    target_modules: list[str] = _default(StudentConfig, "target_modules")
    max_length: int = _default(StudentConfig, "max_length")
    chat_template: str = _default(StudentConfig, "chat_template")
    dtype: str = _default(StudentConfig, "dtype")
    # train.*
    method: Literal["lora", "full"] = _default(TrainConfig, "method")
    epochs: float = _default(TrainConfig, "epochs")
    learning_rate: float = _default(TrainConfig, "learning_rate")
    batch_size: int = _default(TrainConfig, "batch_size")
    grad_accum: int = _default(TrainConfig, "grad_accum")
    seed: int = _default(TrainConfig, "seed")
    threads: int | None = _default(TrainConfig, "threads")
    cpu_bf16: bool = _default(TrainConfig, "cpu_bf16")
    engine: Literal["own", "trl"] = _default(TrainConfig, "engine")
    packing: bool = _default(TrainConfig, "packing")  # trl engine
    heldout_share: float = _default(TrainConfig, "heldout_share")  # early stopping (own engine)
    patience: int = _default(TrainConfig, "patience")

    @classmethod
    def from_config(cls, cfg, model_path: str, data: str, adapter: str, seed: int | None = None, *,
                    init_adapter: str | None = None) -> "TrainJob":
        """The job for `data` under a RunConfig (benches pass another training seed; a repair round that
        continues the previous round passes that round's weights folder as `init_adapter`)."""
        copied = {k: getattr(cfg.student, k) for k in STUDENT_KEYS} | {k: getattr(cfg.train, k) for k in TRAIN_KEYS}
        return cls(model_path=model_path, data_path=data, output_dir=adapter, config_hash=cfg.config_hash(),
                   init_adapter=init_adapter, **copied | ({"seed": seed} if seed is not None else {}))
