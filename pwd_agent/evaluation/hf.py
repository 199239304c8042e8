"""The `hf` evaluator on transformers, CPU or GPU, with five scorers.

- `letters` (the paper's protocol): batched greedy generation with left padding, at most
  `max_new_tokens`, the letters parsed from the text, exact set match.
- `loglik`: the log-likelihood of every valid answer (each non-empty set of option letters,
  written as "A,C" and then stopping) after the same prompt; the most likely one is the answer.
  A base model that cannot keep to the format still gives a valid answer, and the scores show
  how sure it was.
- `options` (lm-evaluation-harness `multiple_choice` style): the prompt is the question alone and
  each option text is scored as the answer: its mean token log-probability, rescaled to the item's
  mean option length and softmaxed over the options. The predicted set is the options at or above
  the uniform share (the argmax alone for single-answer sets); `mass` is the probability on the keys.
  For small students that cannot bind letters to options (OLMES, arXiv 2406.08446).
- `pmi` (calibrated options): as `options`, but each option's score is its log-likelihood after
  the question less its log-likelihood after a content-free prompt (`eval.pmi_prompt`), softmaxed
  over the options: what the question adds to the option, not how familiar its words are. An
  option made of often-trained phrases no longer wins for its phrases alone. Domain-conditional
  PMI (Holtzman et al. 2021, arXiv 2104.08315); lm-evaluation-harness reports it as `acc_mutual_info`.
- `tail_pmi` (calibrated where the options differ): the options' shared opening (their longest
  common prefix, cut at a word boundary: "Right after X," in a same-anchor order item) joins the
  question as context, and each option's own tail is scored as `pmi` scores a whole option: its
  log-likelihood there less its log-likelihood after `eval.pmi_prompt`. A whole claim is true or
  false on its own, so `pmi` takes out what training taught; a tail ("W." after "Right after X,")
  is not, so what is taken out is only how readily the student names that step after anything
  (a step a patch made familiar). Options with no shared opening are scored as by `pmi`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

from pwd_agent.prompting import LETTERS, letters_of, parse_letters, render_choice_prompt, score

SCORERS = ("letters", "loglik", "options", "pmi", "tail_pmi")  # eval.scorer's values


@dataclass
class Prediction:
    raw: str
    predicted: str
    passed: bool
    mass: float | None = None  # `options` scorer only: the probability on the key options, in [0, 1]


def score_letters(generate, items: list[tuple[str, list[str], str]]) -> list[Prediction]:
    """The `letters` scorer on any backend's `generate` (user texts -> completions): the paper's
    prompt, the letter set parsed from the completion, exact set match."""
    raws = generate([render_choice_prompt(q, opts) for q, opts, _ in items])
    preds = []
    for raw, (_, _, key) in zip(raws, items):
        letters = parse_letters(raw)
        preds.append(Prediction(raw=raw, predicted=letters, passed=score(letters, key)))
    return preds


class HFEvaluator:
    """Loads the base student (plus a round's adapter) once and answers items in batches."""

    def __init__(self, model_path: str, adapter: str | None, batch_size: int = 8, max_new_tokens: int = 15,
                 scorer: str = "letters", chat_template: str = "model", dtype: str = "auto",
                 pmi_prompt: str = "Answer:"):
        from pwd_agent.student import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(model_path, chat_template)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.model = load_model(model_path, adapter, dtype)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}: use one of {', '.join(SCORERS)}")
        self.scorer = scorer
        self.pmi_prompt = pmi_prompt
        self._neutral: dict[str, float] = {}  # option text -> log P(option | pmi_prompt); options recur across items
        self._list_goes_on: list[int] | None = None

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

    def close(self) -> None:
        """Drop the weights and hand the heap back to the OS before a trainer subprocess starts
        (glibc keeps freed heap otherwise, and the two would add up)."""
        import ctypes
        import gc

        self.model = None
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def score_items(self, items: list[tuple[str, list[str], str]], multi: bool = True) -> list[Prediction]:
        """(question, options, key) -> predictions under exact set match. `multi` (options and loglik
        scorers): the items may have several keys; False for one key each, judged by the argmax."""
        if self.scorer == "loglik":
            return [self._loglik_item(q, opts, key, multi) for q, opts, key in items]
        if self.scorer == "options":
            return [options_prediction(option_probabilities(self.option_logliks(q, opts)), key, multi)
                    for q, opts, key in items]
        if self.scorer == "pmi":
            return [options_prediction(pmi_probabilities(self.option_logliks(q, opts), self.neutral_logliks(opts)),
                                       key, multi) for q, opts, key in items]
        if self.scorer == "tail_pmi":
            return [options_prediction(self.tail_pmi_probabilities(q, opts), key, multi) for q, opts, key in items]
        return score_letters(self.generate, items)

    def _tail_logprobs(self, context_ids: list[int], tails: list[list[int]]):
        """Log-probabilities over the vocabulary for several continuations of one context, as
        (tail, position, vocab): position j predicts tail token j, the one after a tail's last token
        says what follows it. The context runs once; its cache is repeated for the tails, which run
        as one batch, right-padded: under causal attention a real token never sees the padding."""
        import torch

        device = self.model.device
        width = max(map(len, tails))
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=device)
        with torch.no_grad():
            head = self.model(input_ids=torch.tensor([context_ids], device=device), use_cache=True, logits_to_keep=1)
            cache = head.past_key_values
            cache.batch_repeat_interleave(len(tails))
            mask = torch.ones(len(tails), len(context_ids) + width, dtype=torch.long, device=device)
            body = self.model(input_ids=batch, past_key_values=cache, attention_mask=mask, use_cache=False)
            first = head.logits[:, -1:].expand(len(tails), 1, -1)  # what the context predicts: every tail's first token
            return torch.cat([first, body.logits], dim=1).float().log_softmax(-1)

    # ---- loglik ---------------------------------------------------------------------------
    def _loglik_item(self, question: str, options: list[str], key: str, multi: bool = True) -> Prediction:
        answers = answer_sets(len(options)) if multi else list(LETTERS[: len(options)])
        scores = self.answer_logliks(render_choice_prompt(question, options), answers)
        ranked = sorted(zip(answers, scores), key=lambda pair: -pair[1])
        raw = json.dumps({a: round(v, 3) for a, v in ranked[:3]})  # the best three, for the record
        return Prediction(raw=raw, predicted=ranked[0][0], passed=score(ranked[0][0], key))

    def answer_logliks(self, user_text: str, answers: list[str]) -> list[float]:
        """log P(answer, then the list stops) after the prompt, for each answer string.

        "Stops" is every next token except one that goes on with the list (",", " ,", ...), so
        "A" is not favoured over "A,C" just for being a prefix of it.
        """
        import torch

        from pwd_agent.student import chat_prompt

        prefix = self.tokenizer(chat_prompt(self.tokenizer, user_text), add_special_tokens=False)["input_ids"]
        tails = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        dist = self._tail_logprobs(prefix, tails)
        goes_on = torch.tensor(self._continuation_ids(), device=dist.device)
        out = []
        for row, tail in enumerate(tails):
            picked = dist[row, torch.arange(len(tail)), torch.tensor(tail)].sum()
            stop = torch.log1p(-dist[row, len(tail), goes_on].exp().sum().clamp(max=1 - 1e-6))
            out.append(float(picked + stop))
        return out

    def _continuation_ids(self) -> list[int]:
        """Tokens that carry a letter list on (they start with a comma)."""
        if self._list_goes_on is None:
            vocab = self.tokenizer.get_vocab().values()
            self._list_goes_on = [i for i in vocab if self.tokenizer.decode([i]).lstrip().startswith(",")]
        return self._list_goes_on

    # ---- options --------------------------------------------------------------------------
    def option_logliks(self, question: str, options: list[str], opening: str = "") -> list[tuple[float, int]]:
        """(log P(option | question), its token count) for each option, the option written as the
        assistant's answer to the question alone (no option list, no letters); after `opening`, the
        start of the answer every option shares, when given."""
        import torch

        from pwd_agent.student import chat_prompt

        context, tails = encode_options(self.tokenizer, chat_prompt(self.tokenizer, question) + opening, options)
        dist = self._tail_logprobs(context, tails)
        out = []
        for row, tail in enumerate(tails):
            picked = dist[row, torch.arange(len(tail)), torch.tensor(tail)]
            out.append((float(picked.sum()), len(tail)))
        return out

    def tail_pmi_probabilities(self, question: str, options: list[str]) -> list[float]:
        """The tail_pmi scorer's option probabilities: the shared opening moved into the context,
        each tail's log-likelihood there less its log-likelihood after the content-free prompt."""
        opening, tails = shared_opening(options)
        if not opening:
            return pmi_probabilities(self.option_logliks(question, options), self.neutral_logliks(options))
        return pmi_probabilities(self.option_logliks(question, tails, opening), self.neutral_logliks(tails))

    def neutral_logliks(self, options: list[str]) -> list[float]:
        """log P(option | the content-free pmi_prompt) for each option, each option scored once per evaluator."""
        todo = list(dict.fromkeys(o for o in options if o not in self._neutral))
        if todo:
            self._neutral.update((o, ll) for o, (ll, _) in zip(todo, self.option_logliks(self.pmi_prompt, todo)))
        return [self._neutral[o] for o in options]


def answer_sets(n_options: int) -> list[str]:
    """Every valid answer to an item with n options: the non-empty letter sets, smallest first."""
    return [letters_of(list(c)) for size in range(1, n_options + 1)
            for c in itertools.combinations(range(n_options), size)]


def split_continuation(context: str, continuation: str) -> tuple[str, str]:
    """The context's trailing spaces moved onto the continuation, where a BPE tokenizer puts them
    (" copper" is one token; "copper" after a lone " " token is another, rarer one). A trailing
    newline stays: it ends the chat layout's assistant header and is the same for every option."""
    kept = context.rstrip(" \t")
    return kept, context[len(kept):] + continuation


def encode_options(tokenizer, context: str, options: list[str]) -> tuple[list[int], list[list[int]]]:
    """The context's ids and each option's continuation ids, tokenised apart: a joint encoding
    could merge tokens across the boundary, and then no clean split between the two exists."""
    kept, _ = split_continuation(context, "")
    tails = [tokenizer(split_continuation(context, o)[1], add_special_tokens=False)["input_ids"] for o in options]
    if not all(tails):
        raise ValueError(f"an option encodes to no tokens after {context[-40:]!r}: {options!r}")
    return tokenizer(kept, add_special_tokens=False)["input_ids"], tails


def shared_opening(options: list[str]) -> tuple[str, list[str]]:
    """The options' longest common prefix, cut after the last whitespace inside it (so no word is
    split), and each option's tail after it with its leading space. ("", options) when the options
    share no whole word, or when a tail would be empty (an option that is the opening itself)."""
    common = options[0]
    for option in options[1:]:
        while not option.startswith(common):
            common = common[:-1]
    cut = max(common.rfind(" "), common.rfind("\t"), common.rfind("\n"))
    opening = common[:cut] if cut > 0 else ""
    tails = [o[len(opening):] for o in options]
    if not opening or not all(t.strip() for t in tails):
        return "", options
    return opening, tails


def option_probabilities(logliks: list[tuple[float, int]]) -> list[float]:
    """Softmax over the options of their mean token log-probability times the item's mean option
    length: a long option is not punished for its length, and the scale stays that of a log-likelihood."""
    mean_len = sum(n for _, n in logliks) / len(logliks)
    return softmax([ll / n * mean_len for ll, n in logliks])


def pmi_probabilities(logliks: list[tuple[float, int]], neutral: list[float]) -> list[float]:
    """Softmax over the options of log P(option | question) - log P(option | content-free prompt):
    whole-option sums, so the option's length and its words' familiarity cancel in the difference."""
    return softmax([ll - base for (ll, _), base in zip(logliks, neutral)])


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(v - top) for v in scores]
    total = sum(weights)
    return [w / total for w in weights]


def options_prediction(probs: list[float], key: str, multi: bool) -> Prediction:
    """The predicted set from option probabilities: with `multi`, every option at or above the
    uniform share 1/n (never empty: the largest always is), else the argmax; exact set match."""
    best = max(range(len(probs)), key=probs.__getitem__)
    chosen = [i for i, p in enumerate(probs) if p >= 1 / len(probs)] if multi else []
    predicted = letters_of(chosen or [best])  # `or`: guards the largest against rounding
    keys = set(key.split(","))
    mass = sum(p for i, p in enumerate(probs) if LETTERS[i] in keys)
    raw = json.dumps({LETTERS[i]: round(p, 3) for i, p in enumerate(probs)})
    return Prediction(raw=raw, predicted=predicted, passed=score(predicted, key), mass=mass)
