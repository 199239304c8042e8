"""LoRA fine-tuning with the loss on the answer tokens only, always from the base model.

One process by default. Under `torchrun` or `accelerate launch` (WORLD_SIZE > 1) each process
takes its share of every optimizer step's micro-batches and the LoRA gradients are summed across
processes (nccl on GPUs, gloo on CPUs) before the step, so N processes with `grad_accum` k train
exactly as one process with `grad_accum` N*k: the same global batch, the same updates.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

from pwd_agent.training.job import TrainJob

IGNORE = -100


def log(message: str) -> None:
    print(message, flush=True)  # the train node streams these lines into the run log


def encode(tokenizer, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels; prompt tokens are masked so only the answer is learned. An empty prompt
    is a plain-text sample (kind "text"): no chat layout, the loss on every token but the first
    (which nothing before it predicts)."""
    from pwd_agent.student import chat_prompt, end_of_answer

    if not prompt:
        ids = tokenizer(answer + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"][:max_length]
        return (ids, [IGNORE] + ids[1:]) if len(ids) > 1 else None
    prefix = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    target = tokenizer(answer + end_of_answer(tokenizer), add_special_tokens=False)["input_ids"]
    ids = (prefix + target)[:max_length]
    labels = ([IGNORE] * len(prefix) + target)[:max_length]
    if all(x == IGNORE for x in labels):
        return None  # the prompt alone fills max_length: nothing to learn
    return ids, labels


def batches(examples: list, batch_size: int, rng: random.Random) -> list[list]:
    """Length-sorted batches (little padding) in a shuffled order."""
    ordered = sorted(examples, key=lambda e: len(e[0]))
    groups = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    rng.shuffle(groups)
    return groups


def collate(group: list, pad_id: int):
    """Left-padded batch, so every answer ends at the right edge: the LM head then runs only over
    the last `keep` positions (the answers), which saves most of the logits' memory and time."""
    import torch

    width = max(len(ids) for ids, _ in group)
    ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    labels = torch.full((len(group), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, (x, y) in enumerate(group):
        ids[row, width - len(x) :] = torch.tensor(x)
        labels[row, width - len(y) :] = torch.tensor(y)
        mask[row, width - len(x) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded prompts
    learned = (labels != IGNORE).any(0).nonzero()
    keep = width - int(learned[0]) + 1  # answer span plus the position that predicts its first token
    return ids, labels, mask, positions, keep


def answer_loss(model, ids, labels, mask, positions, keep):
    """Mean cross-entropy over the answer tokens only."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    targets = labels[:, -(keep - 1) :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the launcher's environment; (0, 0, 1) when run alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def sum_gradients(params: list) -> None:
    """All-reduce the trainable gradients; a process with no micro-batch this step adds zeros."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = p.new_zeros(p.shape)
        dist.all_reduce(p.grad)


# ---- what both engines (this loop and trl_engine) share ---------------------------------------
def read_rows(job: TrainJob) -> tuple[list[dict], bytes]:
    """The job's {"prompt", "answer"} rows and the file's bytes (hashed into the metrics)."""
    data = Path(job.data_path).read_bytes()
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()], data


def planned_steps(n_examples: int, job: TrainJob, world: int) -> int:
    """Optimizer steps: batches of `batch_size`, `grad_accum` of them per process and step."""
    steps_per_epoch = math.ceil(math.ceil(n_examples / job.batch_size) / (job.grad_accum * world))
    return max(1, math.ceil(steps_per_epoch * job.epochs))


def step_line(step: int, total: int, loss: float, tokens: float, elapsed: float) -> str:
    """The per-step line the train node turns into a progress event."""
    eta = elapsed / max(step, 1) * (total - step)
    return f"step {step}/{total} loss {loss:.4f} tok/s {tokens / max(elapsed, 1e-9):.0f} eta {eta:.0f}s"


def save_adapter(job: TrainJob, model, losses: list[float], steps: int, examples: int, tokens: int,
                 start: float, data: bytes, world: int, engine: str) -> dict:
    """The PEFT adapter plus train_metrics.json (the last quarter's mean loss as the train loss)."""
    out = Path(job.output_dir)
    model.save_pretrained(out)
    tail = losses[-max(1, len(losses) // 4):]
    metrics = {
        "train_loss": sum(tail) / len(tail), "first_loss": losses[0], "steps": steps, "examples": examples,
        "tokens": tokens, "seconds": round(time.time() - start, 2),
        "data_hash": hashlib.sha256(data).hexdigest()[:16], "config_hash": job.config_hash,
        "processes": world, "engine": engine,
        "base_model": job.model_path,  # the weights this run started from: a fresh LoRA on them, no earlier adapter
    }
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"done: loss {metrics['first_loss']:.4f} -> {metrics['train_loss']:.4f} in {metrics['seconds']}s")
    return metrics


# ---- the own engine -------------------------------------------------------------------------
def train(job: TrainJob) -> dict:
    import torch

    rank, local_rank, world = distributed()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        return _train(job, rank, local_rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(job: TrainJob, rank: int, local_rank: int, world: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

    from pwd_agent.student import load_tokenizer, torch_dtype

    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    rng = random.Random(job.seed)
    rows, data = read_rows(job)
    tokenizer = load_tokenizer(job.model_path, job.chat_template)
    examples = [e for r in rows if (e := encode(tokenizer, r["prompt"], r["answer"], job.max_length))]
    if not examples:
        raise SystemExit(f"no trainable example in {job.data_path}")

    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        torch.cuda.set_device(local_rank)
    dtype = torch_dtype(job.dtype)
    # On CPUs with bf16 units, autocast runs the matmuls in bf16 (about 1.3x here); weights stay fp32.
    autocast = device == "cpu" and job.cpu_bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=dtype).to(device)
    lora = LoraConfig(
        r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=job.lora_dropout,
        target_modules=job.target_modules, task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    if world > 1:
        for p in params:  # every process starts from rank 0's LoRA init
            torch.distributed.broadcast(p.data, src=0)
    optimizer = torch.optim.AdamW(params, lr=job.learning_rate, weight_decay=0.0)

    per_step = job.grad_accum * world  # micro-batches in one optimizer step, over all processes
    total_steps = planned_steps(len(examples), job, world)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total_steps // 10), total_steps)
    say = log if rank == 0 else (lambda _: None)
    say(f"train: {len(examples)} examples, {total_steps} steps, device {device}"
        f"{f' x {world} processes' if world > 1 else ''}, "
        f"{'bf16 autocast, ' if autocast else ''}trainable params {sum(p.numel() for p in params):,}")

    model.train()
    step, tokens, losses, start = 0, 0, [], time.time()
    log_every = max(1, total_steps // 10)
    pad_id = tokenizer.pad_token_id
    while step < total_steps:
        groups = batches(examples, job.batch_size, rng)
        for i in range(0, len(groups), per_step):
            if step >= total_steps:
                break
            in_step = groups[i : i + per_step]
            step_loss, step_tokens = 0.0, 0
            for group in in_step[rank::world]:
                *tensors, keep = collate(group, pad_id)
                ids, labels, mask, positions = (t.to(device) for t in tensors)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = answer_loss(model, ids, labels, mask, positions, keep) / len(in_step)
                loss.backward()
                step_loss += loss.item()
                step_tokens += int(mask.sum())
            if world > 1:
                sum_gradients(params)
                totals = torch.tensor([step_loss, float(step_tokens)], device=device)
                torch.distributed.all_reduce(totals)
                step_loss, step_tokens = float(totals[0]), int(totals[1])
            tokens += step_tokens
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            losses.append(step_loss)
            if step % log_every == 0 or step == total_steps:
                say(step_line(step, total_steps, step_loss, tokens, time.time() - start))

    if rank != 0:
        return {}  # rank 0 saves the adapter; every process holds the same weights
    return save_adapter(job, model, losses, step, len(examples), tokens, start, data, world, "own")
