"""The `vllm` evaluator: vLLM's offline engine, the round's adapter as a LoRARequest (never merged).

Same prompt, chat layout and scoring as the `hf` backend's `letters` scorer (greedy, at most
`max_new_tokens`, letters parsed from the text, exact set match), so the two agree item by item
up to numerics. Needs a CUDA GPU and the `gpu` extra; `preflight.check_backends` refuses it before any work
on a machine without them. The engine is built per round and torn down after, because the trainer
subprocess of the next round needs the GPU memory the engine holds.
"""

from __future__ import annotations

from pwd_agent.config import RunConfig
from pwd_agent.evaluation.hf import Prediction, score_letters


class VLLMEvaluator:
    """One engine for the base student; each call names the round's adapter as a LoRARequest."""

    def __init__(self, model_path: str, adapter: str | None, cfg: RunConfig):
        from vllm import LLM

        from pwd_agent.student import dtype_name, is_full_model, load_tokenizer

        self.tokenizer = load_tokenizer(model_path, cfg.student.chat_template)
        self.max_new_tokens = cfg.eval.max_new_tokens
        if is_full_model(adapter):  # train.method=full: the round's own model, no LoRA
            model_path, adapter = adapter, None
        self.adapter = adapter
        self.llm = LLM(model=model_path, enable_lora=adapter is not None, max_lora_rank=max(cfg.student.lora_r, 8),
                       tensor_parallel_size=cfg.eval.tensor_parallel_size, dtype=dtype_name(cfg.student.dtype),
                       gpu_memory_utilization=cfg.eval.gpu_memory_utilization, seed=0)

    def generate(self, user_texts: list[str]) -> list[str]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        from pwd_agent.student import chat_prompt

        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        lora = LoRARequest("round", 1, self.adapter) if self.adapter else None
        outputs = self.llm.generate([chat_prompt(self.tokenizer, t) for t in user_texts], params, lora_request=lora,
                                    use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def score_items(self, items: list[tuple[str, list[str], str]], multi: bool = True) -> list[Prediction]:
        """The `letters` scorer; `multi` is accepted for the hf evaluator's signature (its options scorer)."""
        return score_letters(self.generate, items)

    def close(self) -> None:
        import gc

        import torch

        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
