"""The `hf` evaluator: batched greedy generation with transformers, left padding, CPU or GPU."""

from __future__ import annotations

from dataclasses import dataclass

from pwd_agent.prompting import parse_letters, render_choice_prompt, score


@dataclass
class Prediction:
    raw: str
    predicted: str
    passed: bool


class HFEvaluator:
    """Loads the base student (plus a round's adapter) once and answers items in batches."""

    def __init__(self, model_path: str, adapter: str | None, batch_size: int = 8, max_new_tokens: int = 15):
        from pwd_agent.student import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(model_path)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.model = load_model(model_path, adapter)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    def generate(self, user_texts: list[str]) -> list[str]:
        """Greedy completions, in input order; prompts are batched by length to limit padding."""
        import torch

        from pwd_agent.student import chat_prompt

        prompts = [chat_prompt(self.tokenizer, t) for t in user_texts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            for row, i in enumerate(idx):
                outputs[i] = self.tokenizer.decode(out[row, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return outputs

    def score_items(self, items: list[tuple[str, list[str], str]]) -> list[Prediction]:
        """(question, options, key) -> predictions under exact set match."""
        raws = self.generate([render_choice_prompt(q, opts) for q, opts, _ in items])
        preds = []
        for raw, (_, _, key) in zip(raws, items):
            letters = parse_letters(raw)
            preds.append(Prediction(raw=raw, predicted=letters, passed=score(letters, key)))
        return preds
