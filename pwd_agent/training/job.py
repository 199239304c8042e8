"""A training job: everything the trainer subprocess needs, written as JOB.json by the train node."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str
    data_path: str  # JSONL of {"prompt", "answer"}
    output_dir: str  # the adapter is saved here (PEFT format)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "v_proj"]
    max_length: int = 384
    chat_template: str = "model"  # student.chat_template
    dtype: str = "auto"  # student.dtype
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    threads: int | None = None
    cpu_bf16: bool = True
    config_hash: str = ""
    engine: str = "own"  # train.engine: own | trl
    packing: bool = False  # train.packing (trl engine)
