"""Fine-tuning (LoRA, or every weight with train.method=full) with the loss on the answer tokens only,
from the base model, or with the job's `init_adapter` from an earlier round's weights (its LoRA adapter on the
base, trained further; or its saved full model).

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


def split_heldout(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): about `share` of the rows set aside as held-out wordings of facts that stay in
    training. A row is held out only when every statement it teaches (its "statements" ids) is still
    taught by a kept row, so early stopping measures recall of trained facts in unseen words and no
    fact loses all its samples. Rows without statement ids always train."""
    if share <= 0:
        return rows, []
    wanted = round(len(rows) * share)
    kept = {}  # statement id -> how many training rows still teach it
    for row in rows:
        for sid in row.get("statements") or ():
            kept[sid] = kept.get(sid, 0) + 1
    order = list(range(len(rows)))
    random.Random(f"{seed}:heldout").shuffle(order)
    out: set[int] = set()
    for i in order:
        sids = rows[i].get("statements") or ()
        if len(out) >= wanted:
            break
        if sids and all(kept[sid] > 1 for sid in sids):
            out.add(i)
            for sid in sids:
                kept[sid] -= 1
    return [r for i, r in enumerate(rows) if i not in out], [r for i, r in enumerate(rows) if i in out]


def lora_config(job: TrainJob, model):
    """The job's LoRA config for `model`. A target tied to another layer (embed_tokens, which most small
    students share with lm_head) gets its adapter tied too, so the update acts on both as the shared weight
    does (the hf evaluator keeps such an adapter unmerged: see student.load_model)."""
    from peft import LoraConfig

    from pwd_agent.student import TIED_LORA_FIX, TIED_LORA_NEEDS, peft_can_tie, targets_tied_embeddings

    tying = {}
    if targets_tied_embeddings(model, job.target_modules):
        if not peft_can_tie():  # check_student refuses this before a run starts; a bench job can still get here
            raise SystemExit(f"{TIED_LORA_NEEDS}: {TIED_LORA_FIX}")
        tying = {"ensure_weight_tying": True}
    return LoraConfig(r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=job.lora_dropout,
                      target_modules=job.target_modules, task_type="CAUSAL_LM", **tying)


def start_model(job: TrainJob, dtype, device: str = "cpu"):
    """The trainable model a job starts from. Without `init_adapter`: model_path's weights, with a fresh LoRA (method
    lora). With it, an earlier round's weights trained further: method lora loads that PEFT adapter on model_path's
    weights, trainable (its LoRA config must match the job's, see saved_lora_config), so the adapter saved at the
    end is again base + one adapter; method full loads the whole model saved in that folder."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    source = full_model_folder(job) if job.init_adapter and job.method == "full" else job.model_path
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    if job.method != "lora":
        return model
    if not job.init_adapter:
        return get_peft_model(model, lora_config(job, model))
    config = saved_lora_config(job, model)
    # A tied embedding adapter (ensure_weight_tying in the saved config) is tied again on load: lm_head's LoRA
    # shares the embedding LoRA's tensors, as in the round that trained it.
    return PeftModel.from_pretrained(model, job.init_adapter, config=config, is_trainable=True, torch_device=device)


def saved_lora_config(job: TrainJob, model):
    """job.init_adapter's LoRA config, checked against the job's: r, lora_alpha and target modules must match (the
    continued adapter is the same kind of adapter, trained further); its dropout becomes the job's (it acts in
    training only). A SystemExit names both when they differ."""
    from peft import LoraConfig

    path = Path(job.init_adapter)
    if not (path / "adapter_config.json").is_file():
        what = "a full model (train.method full)" if (path / "config.json").is_file() else "no PEFT adapter"
        raise SystemExit(f"init_adapter {path}: {what}, no adapter_config.json there; "
                         f"train.method lora continues from a LoRA adapter folder")
    saved = json.loads((path / "adapter_config.json").read_text())
    if saved.get("peft_type") != "LORA":
        raise SystemExit(f"init_adapter {path}: a {saved.get('peft_type')} adapter, not LoRA")
    lora_config(job, model)  # the job's own checks (a tied embedding target needs a peft that ties)
    have = (saved.get("r"), saved.get("lora_alpha"), _module_names(saved.get("target_modules")))
    want = (job.lora_r, job.lora_alpha, _module_names(job.target_modules))
    if have != want:
        def show(r, alpha, targets):
            return f"r={r}, lora_alpha={alpha}, target_modules={targets}"

        raise SystemExit(f"init_adapter {path} was trained with {show(*have)} but this job has {show(*want)}: "
                         f"set student.lora_r / lora_alpha / target_modules to the adapter's, or train from a "
                         f"fresh LoRA (no init_adapter)")
    config = LoraConfig.from_pretrained(str(path))
    config.lora_dropout = job.lora_dropout
    return config


def _module_names(targets) -> list[str] | str | None:
    """Target modules compared by layer name: peft adds a tied embedding's full name ("model.embed_tokens") beside
    the short one it was given when it ties the adapter, which names no other layer. A regex stays as it is."""
    if targets is None or isinstance(targets, str):
        return targets
    return sorted({t.rsplit(".", 1)[-1] for t in targets})


def full_model_folder(job: TrainJob) -> str:
    """job.init_adapter as a saved full model (train.method full) whose shape is model_path's."""
    from transformers import AutoConfig

    from pwd_agent.student import is_full_model

    if not is_full_model(job.init_adapter):
        what = "a LoRA adapter" if (Path(job.init_adapter) / "adapter_config.json").is_file() else "no model"
        raise SystemExit(f"init_adapter {job.init_adapter}: {what}, not a full model folder (config.json and "
                         f"weights); train.method full continues from a folder a full-training round saved")
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")
    have, want = (AutoConfig.from_pretrained(p) for p in (job.init_adapter, job.model_path))
    differ = {k: (getattr(have, k, None), getattr(want, k, None)) for k in keys
              if getattr(have, k, None) != getattr(want, k, None)}
    if differ:
        raise SystemExit(f"init_adapter {job.init_adapter} is not a model of model_path {job.model_path}'s shape: "
                         + ", ".join(f"{k} {a} against {b}" for k, (a, b) in differ.items()))
    return job.init_adapter


def planned_steps(n_examples: int, job: TrainJob, world: int) -> int:
    """Optimizer steps: batches of `batch_size`, `grad_accum` of them per process and step."""
    steps_per_epoch = math.ceil(math.ceil(n_examples / job.batch_size) / (job.grad_accum * world))
    return max(1, math.ceil(steps_per_epoch * job.epochs))


def step_line(step: int, total: int, loss: float, tokens: float, elapsed: float) -> str:
    """The per-step line the train node turns into a progress event."""
    eta = elapsed / max(step, 1) * (total - step)
    return f"step {step}/{total} loss {loss:.4f} tok/s {tokens / max(elapsed, 1e-9):.0f} eta {eta:.0f}s"


# The libraries whose numerics decide what a seed trains: two runs of one job on one data set give the
# same adapter only under the same versions (a V1 retrained after the venv was rebuilt did not).
NUMERIC_PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "numpy")


def environment() -> dict:
    """What the adapter was trained under: Python, the numeric libraries' versions (None where one is
    not installed), the machine and the threads torch used, so a figure that does not reproduce can be
    told apart from one trained under other libraries."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": {name: installed(name) for name in NUMERIC_PACKAGES},
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def save_adapter(job: TrainJob, model, tokenizer, losses: list[float], steps: int, examples: int, tokens: int,
                 start: float, data: bytes, world: int, engine: str, extra: dict | None = None) -> dict:
    """The PEFT adapter (or, with method full, the whole model and its tokenizer, so the folder loads on its
    own) plus train_metrics.json (the last quarter's mean loss as the train loss)."""
    out = Path(job.output_dir)
    model.save_pretrained(out)
    if job.method == "full":
        tokenizer.save_pretrained(out)
    tail = losses[-max(1, len(losses) // 4):]
    metrics = {
        "train_loss": sum(tail) / len(tail), "first_loss": losses[0], "steps": steps, "examples": examples,
        "tokens": tokens, "seconds": round(time.time() - start, 2),
        "data_hash": hashlib.sha256(data).hexdigest()[:16], "config_hash": job.config_hash,
        "processes": world, "engine": engine, "method": job.method,
        "base_model": job.model_path,  # the base the adapter applies to (full: the tokenizer's source)
        "init_adapter": job.init_adapter,  # the earlier round's weights this run continued, or None (a fresh start)
        "environment": environment(),
        **(extra or {}),
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
    from transformers import get_linear_schedule_with_warmup

    from pwd_agent.student import load_tokenizer

    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    rng = random.Random(job.seed)
    rows, data = read_rows(job)
    tokenizer = load_tokenizer(job.model_path, job.chat_template)
    # Encoded before the split, so a held-out row's facts stay taught by rows that really train.
    rows = [dict(r, encoded=e) for r in rows if (e := encode(tokenizer, r["prompt"], r["answer"], job.max_length))]
    rows, heldout_rows = split_heldout(rows, job.heldout_share, job.seed)
    examples, heldout = [r["encoded"] for r in rows], [r["encoded"] for r in heldout_rows]
    if not examples:
        raise SystemExit(f"no trainable example in {job.data_path}")
    if job.heldout_share > 0 and not heldout:
        why = ("too few rows for that share" if round(len(rows) * job.heldout_share) == 0 else
               "every row's facts are taught by it alone (a held-out row needs its statement ids on another row)")
        log(f"early stopping off: no row held out, {why}")

    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        torch.cuda.set_device(local_rank)
    dtype, amp = weights_dtype(job, device)
    # On CPUs with bf16 units, autocast runs the matmuls in bf16 (about 1.3x here); weights stay fp32.
    autocast = amp is not None or (device == "cpu" and job.cpu_bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    amp = amp or torch.bfloat16
    model = start_model(job, dtype, device)
    params = [p for p in model.parameters() if p.requires_grad]  # full: every weight (tied ones once)
    if world > 1:
        # Every process starts from rank 0's weights: its fresh LoRA init (an init_adapter is read from disk
        # by each process alike, so there the broadcast changes nothing).
        for p in params:
            torch.distributed.broadcast(p.data, src=0)
    optimizer = torch.optim.AdamW(params, lr=job.learning_rate, weight_decay=0.0)

    per_step = job.grad_accum * world  # micro-batches in one optimizer step, over all processes
    total_steps = planned_steps(len(examples), job, world)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total_steps // 10), total_steps)
    say = log if rank == 0 else (lambda _: None)
    stopper = EarlyStop(job.patience) if heldout else None
    epoch_steps = planned_steps(len(examples), job.model_copy(update={"epochs": 1}), world)
    say(f"train: {len(examples)} examples{f' ({len(heldout)} held out)' if heldout else ''}, "
        f"{total_steps} steps, {f'from {job.init_adapter}' if job.init_adapter else 'fresh'}, device {device}"
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
                with torch.autocast(device.split(":")[0], dtype=amp, enabled=autocast):
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
            if stopper and (step % epoch_steps == 0 or step == total_steps):
                # Every process scores the held-out set on the same weights; `agree` makes them stop together.
                value = heldout_loss(model, heldout, job.batch_size, pad_id, device, autocast, amp)
                stop = agree(stopper.update(value, params), world, device)
                say(f"epoch {step / epoch_steps:.2f}: held-out loss {value:.4f}"
                    f"{' (best)' if stopper.best_epoch == len(stopper.history) else ''}")
                if stop:
                    say(f"early stop: no lower held-out loss for {job.patience} epoch(s)")
                    total_steps = step

    if rank != 0:
        return {}  # rank 0 saves the adapter; every process holds the same weights
    extra = stopper.restore_best(params) if stopper else {}
    return save_adapter(job, model, tokenizer, losses, step, len(examples), tokens, start, data, world, "own", extra)


def weights_dtype(job: TrainJob, device: str):
    """(dtype the weights load in, autocast dtype or None). Full training keeps fp32 weights and autocasts to the
    half dtype asked for: AdamW steps of lr 1e-5 on bf16 weights mostly round away (LoRA escapes this because peft
    keeps the adapter in fp32). fp16 has no gradient scaler here, so it autocasts to bf16 where the GPU has it."""
    import torch

    from pwd_agent.student import torch_dtype

    dtype = torch_dtype(job.dtype)
    if job.method != "full" or dtype not in (torch.bfloat16, torch.float16):
        return dtype, None
    if device == "cpu":
        return torch.float32, None  # train.cpu_bf16's autocast still applies
    return torch.float32, (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)


def agree(stop: bool, world: int, device: str) -> bool:
    """One early-stop decision for every process (any one stopping stops all), so none waits in a collective."""
    if world == 1:
        return stop
    import torch

    flag = torch.tensor([float(stop)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def heldout_loss(model, examples: list, batch_size: int, pad_id: int, device: str, autocast: bool,
                 amp=None) -> float:
    """Mean answer loss per answer token over the held-out examples, without gradients or dropout."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        ordered = sorted(examples, key=lambda e: len(e[0]))
        for i in range(0, len(ordered), batch_size):
            *tensors, keep = collate(ordered[i : i + batch_size], pad_id)
            ids, labels, mask, positions = (t.to(device) for t in tensors)
            n = int((labels[:, -(keep - 1):] != IGNORE).sum())
            with torch.autocast(device.split(":")[0], dtype=amp or torch.bfloat16, enabled=autocast):
                total += float(answer_loss(model, ids, labels, mask, positions, keep)) * n
            count += n
    model.train()
    return total / max(count, 1)


class EarlyStop:
    """Keeps (in memory) the trainable weights of the epoch with the lowest held-out loss; says when `patience`
    epochs in a row have not lowered it."""

    def __init__(self, patience: int):
        self.patience, self.history, self.best, self.best_epoch = patience, [], None, 0

    def update(self, value: float, params: list) -> bool:
        """Record an epoch's held-out loss; True when training should stop."""
        self.history.append(value)
        if self.best is None or value < min(self.history[:-1]):
            # On the CPU: with full training on a GPU a device copy would add a whole model to its memory.
            self.best, self.best_epoch = [p.detach().to("cpu", copy=True) for p in params], len(self.history)
        return len(self.history) - self.best_epoch >= self.patience

    def restore_best(self, params: list) -> dict:
        """Put the best epoch's weights back; what happened, for train_metrics.json."""
        for p, best in zip(params, self.best):
            p.data.copy_(best)
        return {"heldout_losses": [round(x, 5) for x in self.history], "best_epoch": self.best_epoch,
                "epochs_run": len(self.history)}
