"""The trainer: answer-only loss masks, and a real LoRA run on the tiny model that changes weights."""

import importlib.metadata
import json
import math

import pytest

from pwd_agent.student import load_tokenizer
from pwd_agent.training.job import TrainJob
from pwd_agent.training.trainer import IGNORE, encode, lora_config, train, weights_dtype

from conftest import step_data


def test_prompt_tokens_are_masked(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    ids, labels = encode(tokenizer, "Which step follows?", "B", max_length=512)
    n_prompt = sum(1 for x in labels if x == IGNORE)
    assert n_prompt > 0 and len(ids) == len(labels)
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:]).strip() == "B<eos>"


def test_plain_text_is_learned_whole_without_the_chat_layout(tiny_model):
    """A "text" sample (empty prompt): its own tokens only, the loss on all but the first."""
    tokenizer = load_tokenizer(str(tiny_model))
    text = "In coagulation, once alum is dosed, the next step is that flocs form."
    ids, labels = encode(tokenizer, "", text, max_length=512)
    assert tokenizer.decode(ids).startswith(text)  # no role markers before it
    assert labels[0] == IGNORE and labels[1:] == ids[1:]


def test_overlong_prompt_leaves_nothing_to_learn(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    assert encode(tokenizer, "word " * 400, "A", max_length=16) is None


def test_lora_training_changes_adapter_weights(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    data = step_data(tmp_path / "train.jsonl", 16)
    job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / "adapter"),
                   target_modules=["q_proj", "v_proj"], epochs=3, learning_rate=5e-3, batch_size=4, lora_r=4)
    metrics = train(job)

    trained = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    torch.manual_seed(job.seed)  # the trainer's seed gives the same initial LoRA weights
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    initial = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, lora_dropout=0.05,
                                              target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    state = {k: v for k, v in initial.state_dict().items() if "lora_" in k}
    assert trained and len(trained) == len(state)
    changed = [k for k, v in trained.items() if not torch.allclose(v, _match(state, k), atol=1e-6)]
    assert len(changed) == len(trained)  # every LoRA matrix moved (B starts at zero)
    assert metrics["train_loss"] < metrics["first_loss"]
    saved = json.loads((tmp_path / "adapter" / "train_metrics.json").read_text())
    assert saved["examples"] == 16
    # the versions a figure was trained under, read from the installed packages (not a constant)
    assert saved["environment"]["packages"]["torch"] == importlib.metadata.version("torch")
    assert saved["environment"]["packages"]["peft"] == importlib.metadata.version("peft")


def _match(state: dict, key: str):
    suffix = key.split("base_model.model.", 1)[-1]
    matches = [v for k, v in state.items() if k.endswith(suffix.replace(".weight", ".default.weight"))]
    assert len(matches) == 1, key
    return matches[0]


def test_job_file_rejects_unknown_fields():
    with pytest.raises(ValueError):
        TrainJob.model_validate({"model_path": "m", "data_path": "d", "output_dir": "o", "epocs": 1})


def test_answer_loss_equals_full_sequence_loss(tiny_model):
    """Left padding, explicit positions and logits for the answers only give transformers' own loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from pwd_agent.training.trainer import answer_loss, collate

    tokenizer = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    examples = [encode(tokenizer, "Which step follows dosing?", "B", 512),
                encode(tokenizer, "Short?", "The alum dissolves quickly.", 512),
                encode(tokenizer, "", "In coagulation, once alum is dosed, the next step is that flocs form.", 512)]
    ids, labels, mask, positions, keep = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        ours = answer_loss(model, ids, labels, mask, positions, keep)
        singles = []
        for x, y in examples:
            out = model(input_ids=torch.tensor([x]), labels=torch.tensor([y]))
            n = sum(1 for t in y[1:] if t != IGNORE)
            singles.append((out.loss * n, n))
    reference = sum(loss for loss, _ in singles) / sum(n for _, n in singles)
    assert torch.allclose(ours, reference, atol=1e-4)


@pytest.mark.slow
# accelerate is extended: the same sharded loop as torchrun, under another launcher's command line.
@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("accelerate", marks=pytest.mark.extended)])
def test_two_processes_train_the_same_adapter_as_one_with_the_same_global_batch(tiny_model, tmp_path, launcher):
    """The launcher's command, for real: 2 CPU processes (gloo) with grad_accum 1 against 1 process
    with grad_accum 2. Same micro-batches per step, gradients summed: the same adapter. With early
    stopping on, so the processes' per-epoch stop decision is taken together too."""
    import subprocess

    import torch
    from safetensors.torch import load_file

    from pwd_agent.config import TrainConfig
    from pwd_agent.nodes.train import trainer_command

    data = tmp_path / "train.jsonl"  # two wordings of each of 10 facts: 4 rows can be held out
    data.write_text("".join(json.dumps({"prompt": f"{ask} step {i % 10}?", "answer": f"Step {i % 10 + 1}.",
                                        "statements": [i % 10]}) + "\n"
                            for i, ask in enumerate(["What follows"] * 10 + ["Which step comes after"] * 10)))
    adapters = {}
    for name, accum, cfg in [("one", 2, TrainConfig()), ("two", 1, TrainConfig(launcher=launcher, num_processes=2))]:
        job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / name),
                       lora_r=4, lora_dropout=0.0, epochs=2, learning_rate=5e-3, batch_size=3, grad_accum=accum,
                       threads=1, cpu_bf16=False, heldout_share=0.2)
        (tmp_path / f"{name}.json").write_text(job.model_dump_json())
        done = subprocess.run(trainer_command(cfg, tmp_path / f"{name}.json"), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        adapters[name] = load_file(tmp_path / name / "adapter_model.safetensors")
        metrics = json.loads((tmp_path / name / "train_metrics.json").read_text())
        assert metrics["processes"] == (2 if name == "two" else 1) and metrics["steps"] == 6  # ceil(6 / 2) x 2 epochs
        assert metrics["examples"] == 16 and metrics["epochs_run"] == len(metrics["heldout_losses"]) == 2
    assert adapters["one"].keys() == adapters["two"].keys()
    for key, value in adapters["one"].items():
        assert not torch.allclose(value, torch.zeros_like(value)) or "lora_A" in key
        assert torch.allclose(value, adapters["two"][key], atol=1e-5), key


@pytest.mark.slow
@pytest.mark.parametrize("launcher,processes,packing",
                         [("python", 1, False), pytest.param("torchrun", 2, False, marks=pytest.mark.extended),
                          ("python", 1, True)])  # DDP itself: the own engine's torchrun test above
def test_trl_engine_trains_the_adapter_through_the_trainer_command(tiny_model, tmp_path, launcher, processes, packing):
    """train.engine=trl: TRL's SFTTrainer with our chat layout and LoRA, started as a run starts it,
    alone, as 2 DDP processes (gloo) or packing samples into max_length sequences; it writes the
    adapter, our metrics and our step lines."""
    import subprocess

    from safetensors.torch import load_file

    from pwd_agent.config import TrainConfig
    from pwd_agent.nodes.train import trainer_command

    data = step_data(tmp_path / "train.jsonl", 20)
    job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / "adapter"), lora_r=4,
                   epochs=3, learning_rate=5e-3, batch_size=4, threads=1, engine="trl", packing=packing, max_length=64)
    (tmp_path / "job.json").write_text(job.model_dump_json())
    cfg = TrainConfig(engine="trl", launcher=launcher, num_processes=processes)
    done = subprocess.run(trainer_command(cfg, tmp_path / "job.json"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    metrics = json.loads((tmp_path / "adapter" / "train_metrics.json").read_text())
    steps = math.ceil(20 / 4 / processes) * 3  # unpacked: batches of 4 samples per process
    if packing:  # several samples per 64-token sequence: fewer, fuller batches
        assert metrics["steps"] < steps
        steps = metrics["steps"]
    assert f"step {steps}/{steps} loss" in done.stdout and "engine trl (SFTTrainer)" in done.stdout
    assert metrics["engine"] == "trl" and metrics["processes"] == processes and metrics["steps"] == steps
    assert metrics["train_loss"] < metrics["first_loss"]
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: every one was trained
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_a_job_copies_every_training_setting_from_the_config_with_its_defaults():
    from pwd_agent.config import RunConfig
    from pwd_agent.training.job import STUDENT_KEYS, TRAIN_KEYS

    own = {"model_path", "data_path", "output_dir", "config_hash", "init_adapter"}  # init_adapter: set by the caller
    assert set(TrainJob.model_fields) == own | set(STUDENT_KEYS) | set(TRAIN_KEYS)  # nothing set by hand
    default = TrainJob(model_path="m", data_path="d", output_dir="o")
    cfg = RunConfig()
    assert all(getattr(default, k) == getattr(cfg.student, k) for k in STUDENT_KEYS)
    assert all(getattr(default, k) == getattr(cfg.train, k) for k in TRAIN_KEYS)
    cfg.train.learning_rate, cfg.student.lora_r = 1e-3, 8
    job = TrainJob.from_config(cfg, "m", "d", "o", seed=5)
    assert (job.learning_rate, job.lora_r, job.seed, job.config_hash) == (1e-3, 8, 5, cfg.config_hash())


def test_held_out_rows_are_other_wordings_of_facts_that_stay_in_training():
    from pwd_agent.training.trainer import split_heldout

    rows = [{"prompt": f"q{i}", "answer": "a", "statements": [i % 5]} for i in range(20)]  # 4 wordings a fact
    rows += [{"prompt": "lone", "answer": "a", "statements": [99]}, {"prompt": "none", "answer": "a"}]
    train_rows, heldout = split_heldout(rows, 0.25, seed=0)
    assert len(heldout) == round(22 * 0.25) and len(train_rows) + len(heldout) == 22
    taught = {sid for r in train_rows for sid in r.get("statements", [])}
    assert all(set(r["statements"]) <= taught for r in heldout)  # every held-out fact is still trained
    assert {"lone", "none"} <= {r["prompt"] for r in train_rows}  # a fact's only row, and a row without ids
    assert split_heldout(rows, 0.25, seed=0) == (train_rows, heldout) and split_heldout(rows, 0, 0) == (rows, [])


def test_full_training_on_a_gpu_keeps_fp32_weights_under_autocast(monkeypatch):
    """bf16 weights would round away most AdamW steps at full training's learning rates, so full training
    loads fp32 weights and autocasts; LoRA (peft keeps the adapter in fp32) keeps the dtype it was given."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    job = TrainJob(model_path="m", data_path="d", output_dir="o", method="full", dtype="bfloat16")
    assert weights_dtype(job, "cuda:0") == (torch.float32, torch.bfloat16)
    assert weights_dtype(job.model_copy(update={"dtype": "float16"}), "cuda:0") == (torch.float32, torch.bfloat16)
    assert weights_dtype(job.model_copy(update={"method": "lora"}), "cuda:0") == (torch.bfloat16, None)
    assert weights_dtype(job.model_copy(update={"dtype": "float32"}), "cuda:0") == (torch.float32, None)
    assert weights_dtype(job, "cpu") == (torch.float32, None)  # train.cpu_bf16 decides the CPU's autocast
    assert weights_dtype(job.model_copy(update={"method": "lora"}), "cpu") == (torch.bfloat16, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert weights_dtype(job, "cuda:0") == (torch.float32, None)  # no bf16 units: plain fp32, no fp16 scaler here


def test_early_stop_keeps_the_weights_of_the_lowest_held_out_loss():
    import torch

    from pwd_agent.training.trainer import EarlyStop

    param = torch.nn.Parameter(torch.zeros(2))
    stopper = EarlyStop(patience=2)
    seen = []
    for value in (3.0, 2.0, 2.5, 2.1):
        param.data += 1
        seen.append(stopper.update(value, [param]))
    assert seen == [False, False, False, True]  # two epochs after the best without a lower loss
    extra = stopper.restore_best([param])
    assert torch.equal(param.data, torch.full((2,), 2.0))  # the weights after epoch 2
    assert extra == {"heldout_losses": [3.0, 2.0, 2.5, 2.1], "best_epoch": 2, "epochs_run": 4}


def test_training_with_early_stopping_saves_the_best_epoch_adapter(tiny_model, tmp_path):
    """A real run that overfits (random answers, a high learning rate): held-out wordings scored every epoch,
    training stops once they get worse, and the saved adapter is the best epoch's, not the last one's."""
    import random

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pwd_agent.training.trainer import heldout_loss, split_heldout

    words, rng = "alum floc sand chlorine filter basin pump valve sludge screen tank pipe".split(), random.Random(0)
    rows = [{"prompt": f"{ask} step {i}?", "answer": f"{rng.choice(words)} {rng.choice(words)}", "statements": [i]}
            for i in range(8) for ask in ("What follows", "Which step comes after")]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / "adapter"),
                   target_modules=["q_proj", "v_proj"], epochs=8, learning_rate=0.2, batch_size=4, lora_r=4,
                   heldout_share=0.25, patience=1, cpu_bf16=False)
    metrics = train(job)

    losses = metrics["heldout_losses"]
    assert metrics["epochs_run"] == len(losses) < 8 and metrics["examples"] == 12  # stopped early
    assert metrics["best_epoch"] == len(losses) - 1 and losses[-1] > losses[-2] == min(losses)
    tokenizer = load_tokenizer(str(tiny_model))
    _, held = split_heldout(rows, 0.25, job.seed)
    examples = [encode(tokenizer, r["prompt"], r["answer"], 512) for r in held]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), tmp_path / "adapter")
    saved = heldout_loss(model, examples, 4, tokenizer.pad_token_id, "cpu", autocast=False)
    assert saved == pytest.approx(min(losses), abs=1e-3)


def test_full_training_moves_every_weight_and_the_evaluator_loads_the_round_folder(tiny_model, tmp_path):
    """train.method=full: no adapter; the whole model (and tokenizer) is the round's weights folder, and the
    hf evaluator given that folder as the round's weights scores with it, not with the base."""
    import torch
    from transformers import AutoModelForCausalLM

    from pwd_agent.evaluation.hf import HFEvaluator
    from pwd_agent.student import is_full_model

    data = step_data(tmp_path / "train.jsonl", 16)
    out = tmp_path / "weights"
    job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(out), method="full", epochs=2,
                   learning_rate=1e-3, batch_size=4)
    metrics = train(job)
    assert metrics["method"] == "full" and metrics["train_loss"] < metrics["first_loss"]
    assert is_full_model(str(out)) and (out / "tokenizer_config.json").is_file()

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model)).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    assert base.keys() == tuned.keys()
    assert all(not torch.equal(base[k], tuned[k]) for k in base)  # every tensor moved, not only some layers
    evaluator = HFEvaluator(str(tiny_model), str(out), scorer="options")
    loaded = evaluator.model.state_dict()
    assert all(torch.equal(loaded[k], tuned[k]) for k in tuned)
    prediction = evaluator.score_items([("What follows step 3?", ["Step 4 follows.", "Step 9 follows."], "A")])[0]
    assert prediction.mass is not None
    from types import SimpleNamespace

    from pwd_agent.config import RunConfig
    from pwd_agent.export import _write_serving

    ctx = SimpleNamespace(run_id="r", config=RunConfig(student={"model": str(tiny_model)}))
    _write_serving(tmp_path, ctx, str(out), 2)
    serve = (tmp_path / "serve.sh").read_text()  # `pwd-agent export` serves the folder itself, not base + LoRA
    assert f"vllm serve {out.resolve()} --served-model-name r-r2" in serve and "--lora-modules" not in serve


def test_lora_on_the_embeddings_is_tied_and_the_evaluator_computes_what_it_trained(tiny_model, tmp_path):
    """student.target_modules may name the embedding layer (new names' tokens get their own update): the
    adapter holds an embedding LoRA tied to the output head, as the tiny model (like SmolLM2) ties the weights,
    and the evaluator (which keeps such an adapter unmerged) computes what the trained adapter does."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from pwd_agent.evaluation.hf import HFEvaluator

    data = step_data(tmp_path / "train.jsonl", 16)
    job = TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(tmp_path / "adapter"),
                   target_modules=["q_proj", "v_proj", "embed_tokens"], epochs=2, learning_rate=5e-3, batch_size=4,
                   lora_r=4)
    train(job)
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    embedding = [v for k, v in adapter.items() if "embed_tokens" in k and "lora_embedding_B" in k]
    assert embedding and embedding[0].abs().sum() > 0  # B starts at zero: it was trained
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["ensure_weight_tying"] is True
    plain = lora_config(job.model_copy(update={"target_modules": ["q_proj", "v_proj"]}),
                        AutoModelForCausalLM.from_pretrained(str(tiny_model)))
    assert plain.ensure_weight_tying is False  # nothing tied is targeted: peft is not asked to tie
    evaluator = HFEvaluator(str(tiny_model), str(tmp_path / "adapter"), scorer="options")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    assert base.config.tie_word_embeddings
    unmerged = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ids = evaluator.tokenizer("What follows step 3? Step 4 follows.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(unmerged(ids).logits, evaluator.model(ids).logits, atol=1e-4)
