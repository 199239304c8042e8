"""Bad student and backend settings are refused before any work starts, each with a hint."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pwd_agent.config import RunConfig, StudentConfig
from pwd_agent.errors import ConfigError, StudentError
from pwd_agent.preflight import check_backends
from pwd_agent.student import chat_prompt, check_student, load_tokenizer

from conftest import cli, main_here, step_data


def refused(result: subprocess.CompletedProcess, *texts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert all(t in result.stderr for t in texts), result.stderr
    assert "Traceback" not in result.stderr
    assert not Path("runs").exists() or not any(Path("runs").iterdir())  # no run folder was made


def without_chat_template(tiny_model: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model as a base model: no chat template anywhere."""
    base = tmp_path / "base-model"
    shutil.copytree(tiny_model, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    return base


def test_unknown_model_path_is_refused(small_corpus):
    refused(cli("run", "--corpus", str(small_corpus), "--set", "student.model=/nowhere/model"),
            "cannot load student.model '/nowhere/model'", "hint: use a local folder with config.json")


def test_lora_target_that_matches_no_module_is_refused(tiny_model, small_corpus, monkeypatch, capsys):
    refused(main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--set", f"student.model={tiny_model}",
                "--set", 'student.target_modules=["q_proj","qkv_proj"]'),
            "student.target_modules ['qkv_proj'] match no module", "its linear layers are:", "q_proj", "v_proj")


def test_base_model_without_chat_template_needs_a_named_layout(tiny_model, small_corpus, tmp_path, monkeypatch,
                                                               capsys):
    base = without_chat_template(tiny_model, tmp_path)
    refused(main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--set", f"student.model={base}"),
            f"the student {base} has no chat template", "set student.chat_template=plain")

    assert check_student(StudentConfig(model=str(base), chat_template="plain")) == str(base)
    plain = load_tokenizer(str(base), "plain")
    assert chat_prompt(plain, "Which step?") == "Question:\nWhich step?\n\nAnswer:\n"
    chatml = load_tokenizer(str(base), "chatml")
    assert chat_prompt(chatml, "Which step?") == "<|im_start|>user\nWhich step?<|im_end|>\n<|im_start|>assistant\n"


def test_vllm_backend_is_refused_without_the_package_or_a_gpu(monkeypatch):
    cfg = RunConfig.model_validate({"eval": {"backend": "vllm"}})
    with pytest.raises(ConfigError, match="runs on the hf backend only"):
        check_backends(RunConfig.model_validate({"eval": {"backend": "vllm", "scorer": "loglik"}}))
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="vllm is not installed") as exc:
            check_backends(cfg)
        assert "pwd-agent[gpu]" in exc.value.hint
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-CUDA refusal cannot be shown here")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as exc:
        check_backends(cfg)  # installed or not, no GPU: refused here, before any model loads
    assert "eval.backend=hf" in exc.value.hint


def test_resume_refuses_a_gpu_backend_here_and_leaves_the_config(small_corpus, monkeypatch, capsys):
    import torch

    from pwd_agent.config import load_config
    from pwd_agent.runs import create_run

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    create_run(load_config(None, [f"corpus.path={small_corpus}", "run_id=r"]))
    before = Path("runs/r/config.yaml").read_text()
    result = main_here(monkeypatch, capsys, "resume", "r", "--set", "eval.backend=vllm")
    assert result.returncode == 2 and "eval.backend=vllm" in result.stderr, result.stderr
    assert Path("runs/r/config.yaml").read_text() == before


def test_check_student_accepts_the_tiny_model(tiny_model):
    with pytest.raises(StudentError):
        check_student(StudentConfig(model=str(tiny_model), target_modules=["nope"]))
    assert check_student(StudentConfig(model=str(tiny_model))) == str(tiny_model)


def test_lora_on_tied_embeddings_is_refused_up_front_when_peft_cannot_tie_it(tiny_model, monkeypatch):
    import pwd_agent.student as student

    monkeypatch.setattr(student, "peft_can_tie", lambda: False)  # an older peft, without ensure_weight_tying
    tied = StudentConfig(model=str(tiny_model), target_modules=["q_proj", "embed_tokens"])
    with pytest.raises(StudentError, match="ensure_weight_tying") as caught:
        check_student(tied)
    assert "pip install -U peft" in caught.value.hint
    assert check_student(tied, lora=False) == str(tiny_model)  # full training has no adapter to tie
    assert check_student(StudentConfig(model=str(tiny_model))) == str(tiny_model)  # q_proj, v_proj: nothing tied


def test_trl_engine_is_refused_when_trl_is_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(ConfigError, match="train.engine=trl, but trl is not installed") as exc:
        check_backends(RunConfig.model_validate({"train": {"engine": "trl"}}))
    assert "pwd-agent[trl]" in exc.value.hint


def test_lm_eval_guard_needs_the_models_own_chat_template():
    cfg = RunConfig.model_validate({"eval": {"general": "lm_eval:arc_easy"}, "student": {"chat_template": "plain"}})
    with pytest.raises(ConfigError, match="lm-eval applies the model's own chat template"):
        check_backends(cfg)


@pytest.mark.slow
def test_a_hub_id_student_loads_from_the_hugging_face_cache(tiny_model, tmp_path, monkeypatch):
    """student.model as a hub id: resolved by transformers from the hub cache (offline here), then
    trained (the trainer subprocess) and scored with its adapter; an id that is not there is refused."""
    from pwd_agent.config import TrainConfig
    from pwd_agent.nodes.train import trainer_command
    from pwd_agent.training.job import TrainJob

    revision = "0" * 40
    snapshot = tmp_path / "hub" / "models--pwdtest--tiny-llama" / "snapshots" / revision
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    data = step_data(tmp_path / "train.jsonl", 8)
    job = TrainJob(model_path="pwdtest/tiny-llama", data_path=str(data), output_dir=str(tmp_path / "adapter"),
                   lora_r=4, batch_size=4, threads=1)
    (tmp_path / "job.json").write_text(job.model_dump_json())
    done = subprocess.run(trainer_command(TrainConfig(), tmp_path / "job.json"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "pwdtest/tiny-llama"
    # A fresh process, as `pwd-agent run` is: the hub cache and offline mode are read at import.
    script = (
        "import sys\n"
        "from pwd_agent.config import StudentConfig\n"
        "from pwd_agent.errors import StudentError\n"
        "from pwd_agent.evaluation.hf import HFEvaluator\n"
        "from pwd_agent.student import check_student\n"
        "try:\n    check_student(StudentConfig(model='pwdtest/not-there'))\n"
        "except StudentError as exc:\n    print('refused:', exc.message)\n"
        "print('resolved:', check_student(StudentConfig(model='pwdtest/tiny-llama')))\n"
        "preds = HFEvaluator('pwdtest/tiny-llama', sys.argv[1], max_new_tokens=4).score_items(\n"
        "    [('Which step comes first?', ['one', 'two', 'three', 'four'], 'A')])\n"
        "print('scored:', len(preds))\n")
    shown = subprocess.run([sys.executable, "-c", script, str(tmp_path / "adapter")], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "refused: cannot load student.model 'pwdtest/not-there'" in shown.stdout
    assert "resolved: pwdtest/tiny-llama" in shown.stdout and "scored: 1" in shown.stdout


def test_packing_needs_the_trl_engine():
    with pytest.raises(ConfigError, match="train.packing needs train.engine=trl"):
        check_backends(RunConfig.model_validate({"train": {"packing": True}}))


def test_two_conversions_at_once_keep_one_cache_and_leave_no_scratch(tmp_path):
    """Each process converts into its own scratch folder; the first to finish is renamed into place,
    the second sees the cache there and drops its copy; a dead process's scratch is cleaned up."""
    import os

    from pwd_agent.student import _partial_dir, _publish

    target = tmp_path / "SmolLM2-abc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"SmolLM2-abc.partial-{int(dead.stdout)}"
    second = tmp_path / "SmolLM2-abc.partial-1"  # another live process's conversion (pid 1 is alive)
    for folder in (stale, second):
        folder.mkdir()
        (folder / "config.json").write_text("second")
    first = _partial_dir(target)
    assert not stale.exists() and second.exists() and first.name.endswith(f".partial-{os.getpid()}")
    first.mkdir()
    (first / "config.json").write_text("first")
    _publish(first, target)
    _publish(second, target)
    assert (target / "config.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SmolLM2-abc"]
