"""Structured calls to any OpenAI-compatible endpoint: schema, validation, re-asks, retries, cache, ledger."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from functools import lru_cache
from typing import Callable, TypeVar

from pydantic import BaseModel, ValidationError

from pwd_agent.config import LLMConfig
from pwd_agent.errors import BudgetExceededError, ConfigError, EndpointUnavailableError, PwdAgentError, first_error
from pwd_agent.llm.cache import ResponseCache, cache_key
from pwd_agent.prompting import PromptFile
from pwd_agent.store.models import LLMCall

T = TypeVar("T", bound=BaseModel)
SYSTEM = "You are a careful assistant that answers with one JSON object and nothing else."
FORMAT_MODES = ("json_schema", "json_object", "none")


_local = threading.local()


def take_records() -> list[LLMCall]:
    """The ledger rows this thread made since the last take (so concurrent units keep their own);
    unsaved LLMCall objects that the node adds to the unit's transaction."""
    records = getattr(_local, "records", [])
    _local.records = []
    return records


def _record(base: dict, **fields) -> None:
    if not hasattr(_local, "records"):
        _local.records = []
    _local.records.append(LLMCall(**{**base, **fields}))


@lru_cache(maxsize=None)
def _schema_text(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema())


def json_schema(schema: type[BaseModel]) -> dict:
    """The schema's JSON Schema, generated once per class (pydantic took about a millisecond of CPU per
    call), as a fresh dict each time so no caller can change another's."""
    return json.loads(_schema_text(schema))


class StructuredClient:
    """Asks for a pydantic object; a bad answer goes back with its error, transient errors retry."""

    def __init__(self, cfg: LLMConfig, cache: ResponseCache | None, spent: float = 0.0,
                 batch_store: str | None = None):
        """With `batch_store` (the run's store URL) and llm.batch, first requests go through the Batch
        API (a bulk stage); without it every call is live (the Debugger)."""
        from openai import OpenAI

        key = os.environ.get(cfg.api_key_env)
        if not key and not cfg.base_url:
            raise ConfigError(f"{cfg.api_key_env} is not set",
                              f"export {cfg.api_key_env}=..., or set llm.base_url to a local server")
        self.cfg = cfg
        self.client = OpenAI(base_url=cfg.base_url, api_key=key or "not-needed", max_retries=0, timeout=cfg.timeout_s)
        self.cache = cache
        self.mode = cfg.response_format
        self.spent = spent
        self.reserved = 0.0  # cost estimates of requests waiting on a batch
        self._lock = threading.Lock()
        self.semaphore = threading.BoundedSemaphore(cfg.max_concurrency)
        self.batcher = None
        if cfg.batch and batch_store:
            from pwd_agent.llm.batch import Batcher

            self.batcher = Batcher(self.client, cfg, cache, batch_store)

    # ---- the one public call ------------------------------------------------------------
    def ask(self, agent: str, prompt: PromptFile, variables: dict, schema: type[T],
            check: Callable[[T], str | None] | None = None) -> T | None:
        """A valid `schema` object, or None when every re-ask failed (the unit is then recorded failed)."""
        rendered = prompt.render(**variables)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": rendered}]
        schema_json = json_schema(schema)
        params = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        if self.cfg.extra_body:
            params["extra_body"] = self.cfg.extra_body
        # prompt_hash names the unit (its first request), so a unit's re-asks share it in the ledger.
        unit = cache_key(self.cfg.model, messages, params, schema_json)
        base = dict(agent=agent, prompt_name=prompt.name, prompt_version=prompt.version,
                    prompt_hash=unit[:16], model=self.cfg.model)
        for turn in range(self.cfg.max_format_retries + 1):
            # Batch mode: the first request of a unit waits on a batch; re-asks stay live.
            content = self._answer(base, messages, schema_json, params, batch=turn == 0 and self.batcher is not None)
            parsed, error = self._parse(content, schema, check)
            if parsed is not None:
                return parsed
            self._mark_last_failed(error)
            messages = messages + [
                {"role": "assistant", "content": content},
                {"role": "user",
                 "content": f"That answer was rejected: {error}. Reply again with the corrected JSON only."},
            ]
        return None

    def _answer(self, base: dict, messages: list[dict], schema_json: dict, params: dict,
                batch: bool = False) -> str:
        """The endpoint's reply to exactly this conversation: from the cache when it was asked
        before (a rejected reply too, so a repeated run replays its re-asks without a request)."""
        key = cache_key(self.cfg.model, messages, params, schema_json)
        use_cache = self.cache is not None and self.cfg.cache
        if use_cache and (hit := self.cache.get(key)):
            _record(base, cache_hit=True, input_tokens=hit[1], output_tokens=hit[2])
            return hit[0]
        if batch:
            from pwd_agent.llm.batch import BatchRowFailed

            try:
                return self._batched(base, key, messages, schema_json, params)
            except BatchRowFailed as failed:  # answered live instead, the reason in its ledger row
                content, usage = self._complete(base, messages, schema_json, params)
                _local.records[-1].error = f"sent live: {failed}"[:500]
        else:
            content, usage = self._complete(base, messages, schema_json, params)
        if use_cache:
            self.cache.put(key, content, *usage)
        return content

    # ---- parsing and validation ---------------------------------------------------------
    @staticmethod
    def _parse(content: str, schema: type[T], check) -> tuple[T | None, str | None]:
        text = content.strip()
        fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
        text = fenced.group(1) if fenced else text
        if not text:
            return None, "the answer was empty"
        try:
            obj = schema.model_validate_json(text)
        except ValidationError as exc:
            where, message, _ = first_error(exc, "the JSON")
            return None, f"{where}: {message}"
        problem = check(obj) if check else None
        return (None, problem) if problem else (obj, None)

    @staticmethod
    def _mark_last_failed(error: str | None) -> None:
        records = getattr(_local, "records", [])
        if records:
            records[-1].ok = False
            records[-1].error = (error or "")[:500]

    # ---- one completion with transient retries -------------------------------------------
    def _complete(self, base: dict, messages: list[dict], schema_json: dict,
                  params: dict) -> tuple[str, tuple[int, int]]:
        import openai

        last_error: Exception | None = None
        attempt = 0
        while True:
            self._check_budget(messages)
            mode = self._mode()
            start = time.perf_counter()
            try:
                with self.semaphore:
                    response = self.client.chat.completions.create(
                        model=self.cfg.model, messages=self._with_schema(messages, mode, schema_json), **params,
                        **self._format_kwargs(mode, schema_json))
            except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
                if self._downgrade(mode):
                    continue  # the endpoint refused this response_format: try the next one at once
                if not isinstance(exc, openai.InternalServerError):
                    raise PwdAgentError(f"the endpoint rejected the request: {exc}",
                                        "check llm.model and llm.response_format") from None
                last_error = exc
            except (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError) as exc:
                last_error = exc
            else:
                self._confirm(mode)
                return self._account(base, response, time.perf_counter() - start)
            if attempt >= self.cfg.max_retries:
                break
            self._backoff(attempt)
            attempt += 1
        raise EndpointUnavailableError(
            f"the LLM endpoint {self.cfg.base_url or 'api.openai.com'} failed {self.cfg.max_retries + 1} times "
            f"(last error: {type(last_error).__name__}: {last_error})",
            "start or fix the server (llm.base_url, llm.model), then `pwd-agent resume RUN`; finished work is kept",
        )

    def _batched(self, base: dict, key: str, messages: list[dict], schema_json: dict, params: dict) -> str:
        """The reply to this conversation from a batch (the batcher caches it), priced at the batch
        rate; raises BatchRowFailed when the batch did not answer it."""
        factor = self.cfg.batch_price_factor
        estimate = self._check_budget(messages, factor)  # reserved while the batch runs: a batch of
        with self._lock:  # hundreds of requests must not pass llm.max_cost before any reply is priced
            self.reserved += estimate
        mode = self._mode()
        body = {"model": self.cfg.model, "messages": self._with_schema(messages, mode, schema_json),
                **{k: v for k, v in params.items() if k != "extra_body"}, **params.get("extra_body", {}),
                **self._format_kwargs(mode, schema_json)}
        start = time.perf_counter()
        try:
            reply = self.batcher.submit(key, body).result()
        finally:
            with self._lock:
                self.reserved -= estimate
        cost = 0.0 if reply.shared else factor * (reply.input_tokens * self.cfg.price_input_per_m
                                                  + reply.output_tokens * self.cfg.price_output_per_m) / 1e6
        with self._lock:
            self.spent += cost
        _record(base, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens, batch=True,
                cache_hit=reply.shared, latency_s=round(time.perf_counter() - start, 3), cost=cost)
        return reply.content

    def _account(self, base: dict, response, latency: float) -> tuple[str, tuple[int, int]]:
        usage = response.usage
        tokens_in = getattr(usage, "prompt_tokens", 0) or 0
        tokens_out = getattr(usage, "completion_tokens", 0) or 0
        cost = tokens_in * self.cfg.price_input_per_m / 1e6 + tokens_out * self.cfg.price_output_per_m / 1e6
        with self._lock:
            self.spent += cost
        _record(base, input_tokens=tokens_in, output_tokens=tokens_out, latency_s=round(latency, 3), cost=cost)
        content = response.choices[0].message.content if response.choices else ""
        return content or "", (tokens_in, tokens_out)

    def _backoff(self, attempt: int) -> None:
        # Exponential with full jitter, capped: spreads retries of concurrent workers apart.
        time.sleep(random.uniform(0, min(30.0, 0.5 * 2**attempt)))

    def _check_budget(self, messages: list[dict], factor: float = 1.0) -> float:
        """Raise when the next call could pass llm.max_cost; its cost estimate otherwise."""
        if self.cfg.max_cost is None:
            return 0.0
        prompt_tokens = sum(len(m["content"]) for m in messages) / 4  # a rough upper estimate
        estimate = factor * (prompt_tokens * self.cfg.price_input_per_m / 1e6
                             + self.cfg.max_tokens * self.cfg.price_output_per_m / 1e6)
        if self.spent + self.reserved + estimate > self.cfg.max_cost:
            raise BudgetExceededError(
                f"stopped: llm.max_cost {self.cfg.max_cost:.4f} would be passed by the next call "
                f"(spent {self.spent:.4f})",
                "raise it and go on: pwd-agent resume RUN --set llm.max_cost=NEW_LIMIT",
            )
        return estimate

    # ---- response_format modes -----------------------------------------------------------
    def _mode(self) -> str:
        return "json_schema" if self.mode == "auto" else self.mode.removeprefix("auto:")

    def _downgrade(self, mode: str) -> bool:
        """In auto mode, move to the next format after a refusal; False when nothing is left to try."""
        with self._lock:
            if not self.mode.startswith("auto") or mode == "none":
                return False
            self.mode = "auto:" + FORMAT_MODES[FORMAT_MODES.index(mode) + 1]
            return True

    def _confirm(self, mode: str) -> None:
        with self._lock:
            if self.mode.startswith("auto"):
                self.mode = mode  # a mode the endpoint accepted: keep it for the run

    @staticmethod
    def _with_schema(messages: list[dict], mode: str, schema_json: dict) -> list[dict]:
        """Without response_format the schema travels in the system message."""
        if mode != "none":
            return messages
        system = {"role": "system", "content": f"{SYSTEM} The JSON must follow this schema: {json.dumps(schema_json)}"}
        return [system] + messages[1:]

    @staticmethod
    def _format_kwargs(mode: str, schema_json: dict) -> dict:
        if mode == "json_schema":
            return {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": schema_json.get("title", "answer"),
                                                        "schema": schema_json}}}
        if mode == "json_object":  # llama.cpp's server constrains output with this schema
            return {"response_format": {"type": "json_object", "schema": schema_json}}
        return {}
