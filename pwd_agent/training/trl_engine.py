"""train.engine = trl: the same job trained by TRL's SFTTrainer (LoRA through peft_config, or every weight).

The data is TRL's standard prompt-completion format with our chat layout already applied, so the
loss covers the completion (answer + end-of-answer token) only, as in our own loop. Hugging Face's
Trainer runs the optimisation, so `torchrun` / `accelerate launch` give it DDP without code of ours.
The adapter, `train_metrics.json` and the "step k/n ..." log lines are the same as the own loop's, and so is a
job's `init_adapter` (the same trainer.start_model and checks): the PeftModel goes to SFTTrainer as the model,
with no peft_config.
"""

from __future__ import annotations

import time
from pathlib import Path

from pwd_agent.training.job import TrainJob


def train_trl(job: TrainJob) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from pwd_agent.student import chat_prompt, end_of_answer, load_tokenizer, torch_dtype
    from pwd_agent.training.trainer import (
        distributed, log, lora_config, planned_steps, read_rows, save_adapter, start_model, step_line, weights_dtype,
    )

    rank, _, world = distributed()
    if job.threads:
        torch.set_num_threads(job.threads)
    rows, data = read_rows(job)
    tokenizer = load_tokenizer(job.model_path, job.chat_template)
    # A plain-text sample (empty prompt) stays plain: no chat layout, the whole text is the completion.
    dataset = Dataset.from_list([{"prompt": chat_prompt(tokenizer, r["prompt"]) if r["prompt"] else "",
                                  "completion": r["answer"] + (end_of_answer(tokenizer) if r["prompt"]
                                                               else tokenizer.eos_token or "")} for r in rows])
    on_gpu = torch.cuda.is_available()
    dtype = torch_dtype(job.dtype)
    weights, _ = weights_dtype(job, "cuda" if on_gpu else "cpu")  # full training: fp32 weights, bf16 mixed precision
    if job.init_adapter:  # the earlier round's adapter (trainable) on the base, or its full model
        model = start_model(job, weights)
    else:  # a fresh LoRA is made by SFTTrainer from peft_config
        model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=weights)
    total_steps = planned_steps(len(rows), job, world)
    args = SFTConfig(
        output_dir=str(Path(job.output_dir).parent / ".trl"), num_train_epochs=job.epochs,
        per_device_train_batch_size=job.batch_size, gradient_accumulation_steps=job.grad_accum,
        learning_rate=job.learning_rate, lr_scheduler_type="linear", warmup_steps=max(1, total_steps // 10),
        weight_decay=0.0, max_grad_norm=1.0, seed=job.seed, max_length=job.max_length, completion_only_loss=True,
        packing=job.packing,
        bf16=on_gpu and dtype == torch.bfloat16, use_cpu=not on_gpu,
        ddp_backend="gloo" if world > 1 and not on_gpu else None, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_drop_last=False)
    lora = lora_config(job, model) if job.method == "lora" and not job.init_adapter else None
    losses: list[float] = []
    start = time.time()

    class StepLines(TrainerCallback):
        """Our trainer's log line per step, which the train node turns into progress events."""

        def on_log(self, _args, state, _control, logs=None, **_):
            if not logs or "loss" not in logs:
                return
            losses.append(float(logs["loss"]))
            if rank == 0:
                log(step_line(state.global_step, state.max_steps, float(logs["loss"]),
                              float(logs.get("num_tokens", 0)), time.time() - start))

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora,
                         callbacks=[StepLines()])
    trainer.remove_callback(PrinterCallback)  # its raw dicts would drown our step lines
    if rank == 0:
        log(f"train: {len(rows)} examples, {trainer.args.max_steps if trainer.args.max_steps > 0 else total_steps} "
            f"steps, {f'from {job.init_adapter}' if job.init_adapter else 'fresh'}, engine trl (SFTTrainer), "
            f"device {'cuda' if on_gpu else 'cpu'}"
            f"{f' x {world} processes' if world > 1 else ''}")
    trainer.train()
    if not trainer.is_world_process_zero():
        return {}
    tokens = int(trainer.state.num_input_tokens_seen or _logged_tokens(trainer))
    return save_adapter(job, trainer.model, tokenizer, losses, trainer.state.global_step, len(rows), tokens, start,
                        data, world, "trl")


def _logged_tokens(trainer) -> float:
    """TRL's own count of the tokens trained on (its `num_tokens` log entry)."""
    counts = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    return counts[-1] if counts else 0
