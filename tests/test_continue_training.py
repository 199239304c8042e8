"""A training job that continues an earlier round's weights (TrainJob.init_adapter) instead of a fresh LoRA."""

import json

import pytest

from pwd_agent.training.job import TrainJob
from pwd_agent.training.trainer import train

from conftest import step_data

# embed_tokens is tied to lm_head in the tiny model: the continued adapter must come back tied, and peft saves the
# tied layer's full name beside the short one, which the config check must not take for a mismatch.
TARGETS = ["q_proj", "v_proj", "embed_tokens"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The jobs run on one thread (train.threads sets torch's for the process): on a shared 2-core machine two
    threads beside another busy process made a 12-step job 100x slower. The suite's own count is put back after."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _job(tiny_model, data, out, **update) -> TrainJob:
    settings = dict(target_modules=TARGETS, epochs=3, learning_rate=5e-3, batch_size=4, lora_r=4, lora_dropout=0.0,
                    cpu_bf16=False, threads=1)
    return TrainJob(model_path=str(tiny_model), data_path=str(data), output_dir=str(out), **settings | update)


@pytest.fixture(scope="module")
def first_round(tiny_model, tmp_path_factory, one_thread):
    """A fresh LoRA trained on 16 rows: the adapter the continuing jobs start from, and its metrics."""
    folder = tmp_path_factory.mktemp("first")
    data = step_data(folder / "train.jsonl", 16)
    metrics = train(_job(tiny_model, data, folder / "adapter"))
    return folder / "adapter", data, metrics


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_continuing_starts_from_the_init_adapter_and_saves_it_whole(tiny_model, tmp_path, first_round):
    """With a learning rate of 0 the continued job's saved adapter is the init adapter, tensor for tensor (a fresh
    LoRA's B matrices would be zeros), and its first loss, on the same first batch (same seed and data) as the first
    round's fresh start, is that trained adapter's: lower."""
    import torch

    init, data, first = first_round
    metrics = train(_job(tiny_model, data, tmp_path / "again", init_adapter=str(init), learning_rate=0.0))
    saved, start = _tensors(tmp_path / "again"), _tensors(init)
    assert saved.keys() == start.keys()
    assert [k for k in start if not torch.equal(saved[k], start[k])] == []
    assert metrics["first_loss"] < first["first_loss"] - 0.5  # the fresh start's first loss is the base model's
    assert metrics["first_loss"] == pytest.approx(first["train_loss"], rel=0.1)
    assert metrics["init_adapter"] == str(init) and first["init_adapter"] is None
    recorded = json.loads((tmp_path / "again" / "train_metrics.json").read_text())
    assert recorded["init_adapter"] == str(init) and recorded["base_model"] == str(tiny_model)


def test_the_continued_adapter_loads_on_the_base_tied_and_trained_further(tiny_model, tmp_path, first_round):
    """Trained on other rows (a repair round's patches): the saved adapter loads with peft on the base alone, keeps
    the embedding LoRA tied to the output head, and is not the init adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    init, _, _ = first_round
    patches = tmp_path / "patches.jsonl"
    patches.write_text("".join(json.dumps({"prompt": f"What comes before step {i}?", "answer": f"Step {i - 1}."})
                               + "\n" for i in range(2, 14)))
    metrics = train(_job(tiny_model, patches, tmp_path / "next", init_adapter=str(init), epochs=2))
    assert metrics["train_loss"] < metrics["first_loss"]

    saved, start = _tensors(tmp_path / "next"), _tensors(init)
    assert saved.keys() == start.keys()
    moved = [k for k in saved if "lora_" in k and not torch.equal(saved[k], start[k])]
    assert len(moved) == sum("lora_" in k for k in saved)  # every LoRA matrix went on training
    config = json.loads((tmp_path / "next" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["ensure_weight_tying"]) == (4, 32, True)

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    model = PeftModel.from_pretrained(base, tmp_path / "next").eval()
    head, embedding = model.base_model.model.lm_head, model.base_model.model.model.embed_tokens
    assert torch.equal(head.lora_A["default"].weight, embedding.lora_embedding_B["default"].T)
    earlier = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), init).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, earlier(ids).logits, atol=1e-4)


def test_an_init_adapter_of_another_rank_is_refused_naming_both(tiny_model, tmp_path, first_round):
    init, data, _ = first_round
    with pytest.raises(SystemExit) as refused:
        train(_job(tiny_model, data, tmp_path / "out", init_adapter=str(init), lora_r=8))
    message = str(refused.value)
    assert str(init) in message and "r=4, lora_alpha=32" in message and "r=8, lora_alpha=32" in message
    assert "target_modules=['embed_tokens', 'q_proj', 'v_proj']" in message
    with pytest.raises(SystemExit, match="target_modules=\\['q_proj', 'v_proj'\\]"):
        train(_job(tiny_model, data, tmp_path / "out", init_adapter=str(init), target_modules=["q_proj", "v_proj"]))
    assert not (tmp_path / "out").exists()  # refused before training


def test_init_adapter_of_the_wrong_kind_is_refused(tiny_model, tmp_path, first_round):
    """method full continues a full-model folder, method lora an adapter folder; each refuses the other."""
    init, data, _ = first_round
    with pytest.raises(SystemExit, match="a LoRA adapter, not a full model folder"):
        train(_job(tiny_model, data, tmp_path / "out", init_adapter=str(init), method="full"))
    with pytest.raises(SystemExit, match="a full model .* no adapter_config.json"):
        train(_job(tiny_model, data, tmp_path / "out", init_adapter=str(tiny_model)))
    with pytest.raises(SystemExit, match="no PEFT adapter"):
        train(_job(tiny_model, data, tmp_path / "out", init_adapter=str(tmp_path / "missing")))


def test_full_training_continues_the_saved_full_model(tiny_model, tmp_path):
    """method full: init_adapter is a full-training round's folder; with a learning rate of 0 the saved model is
    that folder's model, every tensor, not model_path's."""
    import torch
    from transformers import AutoModelForCausalLM

    data = step_data(tmp_path / "train.jsonl", 8)
    first = train(_job(tiny_model, data, tmp_path / "first", method="full", epochs=2, learning_rate=1e-3))
    again = train(_job(tiny_model, data, tmp_path / "again", method="full", epochs=1, learning_rate=0.0,
                       init_adapter=str(tmp_path / "first")))
    assert again["first_loss"] < first["first_loss"] and again["init_adapter"] == str(tmp_path / "first")
    earlier = AutoModelForCausalLM.from_pretrained(str(tmp_path / "first")).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "again")).state_dict()
    assert all(torch.equal(earlier[k], saved[k]) for k in earlier)
    assert (tmp_path / "again" / "tokenizer_config.json").is_file()  # the folder loads on its own


def test_a_job_from_the_config_carries_init_adapter():
    from pwd_agent.config import RunConfig

    cfg = RunConfig()
    assert TrainJob.from_config(cfg, "m", "d", "o").init_adapter is None
    job = TrainJob.from_config(cfg, "m", "d", "o", 3, init_adapter="rounds/01/adapter")
    assert (job.init_adapter, job.seed) == ("rounds/01/adapter", 3)
    assert TrainJob.model_validate_json(job.model_dump_json()).init_adapter == "rounds/01/adapter"


def test_trl_engine_continues_the_init_adapter(tiny_model, tmp_path):
    """train.engine=trl: the init adapter goes to SFTTrainer as a trainable PeftModel; with a learning rate of 0
    it is saved unchanged, and its first loss is the trained adapter's. (Attention targets only: TRL refuses any
    adapter on lm_head, so a tied embedding LoRA cannot train under it, fresh or continued.)"""
    import torch

    from pwd_agent.training.trl_engine import train_trl

    data, targets = step_data(tmp_path / "train.jsonl", 16), ["q_proj", "v_proj", "down_proj"]
    first = train(_job(tiny_model, data, tmp_path / "first", target_modules=targets, learning_rate=2e-2))
    init = tmp_path / "first"
    metrics = train_trl(_job(tiny_model, data, tmp_path / "trl", init_adapter=str(init), learning_rate=0.0,
                             target_modules=targets, epochs=1, engine="trl"))
    saved, start = _tensors(tmp_path / "trl"), _tensors(init)
    assert saved.keys() == start.keys() and all(torch.equal(saved[k], start[k]) for k in start)
    assert metrics["engine"] == "trl" and metrics["init_adapter"] == str(init)
    # The base model's loss is about 6.41 on any of these batches, the trained adapter's about 6.2 (a LoRA on
    # attention and MLP moves the tiny model's loss less than one on the embeddings).
    assert metrics["first_loss"] < first["first_loss"] - 0.1


def test_the_training_seed_is_honoured(tiny_model, tmp_path, first_round):
    """Benches train one arm per seed: the same seed gives the same adapter, another seed another one (its LoRA
    init and its batch order), so seeds are real replicates, not one draw counted twice."""
    import torch

    _, data, _ = first_round
    runs = {name: _tensors(tmp_path / name) for name, seed in (("a", 0), ("b", 0), ("c", 1))
            if train(_job(tiny_model, data, tmp_path / name, seed=seed, epochs=1))}
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
