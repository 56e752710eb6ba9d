"""SRPO, RRPO and oracle resets for TRL's ``GRPOTrainer`` (tested with TRL 1.16: ``trl>=1.16,<1.17``).

Methods (``srpo.methods``): ``grpo``, ``rrpo``, ``srpo``, ``oracle``, ``srpo-offset`` and
``fixed-reset`` run here; the others cannot be expressed through TRL's rollout function and loss,
and ``SRPOSettings`` refuses them with the reason (``srpo.methods.base.Method.trl``): SCoRe and
Critique-GRPO train a sample under another prompt than the one it was sampled from (and SCoRe
puts a KL to the reference in the reward, Critique-GRPO shapes the refinement's tokens by
f(pi)); SPO-Tree and TreeRL need per-token advantages; ``entropy-reset`` needs the policy's token
entropies inside the rollout function. Run them with ``experiments/llm_srpo.py``.

Two ways in:

- ``SRPOTrainer(model, args, task, train_problems, settings)``: a thin ``GRPOTrainer`` subclass (the
  supported path). It checks the configuration, builds the prompt dataset, plugs in the rollout
  function and the reward below, replaces TRL's advantages by SRPO's exactly, keeps the release's
  uncorrected REINFORCE on every mini-batch of a generation, and writes ``resets.parquet``.
- ``SRPORollout``: the ``rollout_func`` (and ``SRPORollout.reward``, its reward function) for a
  plain ``GRPOTrainer(..., rollout_func=rollout, reward_funcs=[rollout.reward])`` with
  ``scale_rewards="none"``; plus ``SRPOCallback(rollout)`` for the reset table.

What the rollout function does with TRL's batch. TRL hands each process its slice of the
generation batch, every prompt repeated ``num_generations`` (G) times consecutively. For each
block of G it runs our own batch logic (``srpo.buffers.build_batch``: fresh chains until the base
group and a failed parent are found, localization by the policy (SRPO), at random (RRPO) or by the
step verifier (oracle), suffixes sampled from the kept prefix), and returns G rows in the layout
of the split (``1x4``: 4 base chains then 4 suffixes of one parent): ``prompt_ids``,
``completion_ids`` (for a suffix: the copied prefix followed by the sampled suffix) and
``env_mask`` (0 on the copied prefix: TRL multiplies it into the loss mask, so the prefix gets
exactly zero gradient). Rewards are z-scored within the subgroups by ``srpo.group_advantages``
(population std) and returned as the extra column ``srpo_advantage``; the reward function returns
that column, so that with ``scale_rewards="none"`` TRL's ``r - mean over the block of G`` equals
SRPO's advantage (every subgroup's z-scores sum to zero; ``SRPOTrainer`` also replaces TRL's
tensor by ours, removing the rounding). Every generated token (base chains, parents, discarded
chains, suffixes, localization replies) is counted in the ``srpo/*`` metrics, and one row per reset
parent goes to ``<output_dir>/resets.parquet`` with the columns of our trainer
(``srpo.metrics.RESET_COLUMNS``).

Generation engine (``SRPOSettings.engine``): ``trl`` uses TRL's own vLLM (``use_vllm=True``;
colocated: ``trainer.vllm_generation.llm``; server: a ``VLLMClient`` per process), which TRL syncs
before each generation; ``hf`` decodes with the policy being trained (gathered under DeepSpeed
ZeRO-3); ``vllm`` builds our own in-process vLLM engine and syncs it each step. ``auto`` (default)
is ``trl`` when ``use_vllm`` is set, else ``hf``.

Equivalence with ``srpo.trainer`` (``tests/srpo/test_trl.py``): with ``loss_type="grpo"`` (=
``agg="seq-mean-token-mean"``) or ``"dapo"``/``"bnpo"`` (= ``"token-mean"``), ``beta=0``,
``num_iterations=1``, ``temperature`` = the sampling temperature, the same batch gives the same
advantages and the same gradient. The *loss values* differ in form: TRL reports the ratio form
``-min(r A, clip(r) A)`` at ratio ``r = 1``, whose value is ``-A`` per token (0 for zero-mean
groups) while its gradient is REINFORCE's; ``srpo.masked_pg_loss`` reports REINFORCE's value
``-A log pi``. Compare TRL's value with ``masked_pg_loss(..., old_logprobs=logp.detach())``.
Known differences: TRL shuffles the rows of a generation before splitting it into
``steps_per_generation`` mini-batches (our trainer splits by prompt; one mini-batch per generation
is identical), and ``"grpo"`` divides by all rows where our trainer divides by rows with at least
one trained token (they differ only if a row has no trained token, e.g. an empty suffix).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import trl as _trl
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError('srpo.integrations.trl needs TRL: pip install "credit-resets[trl]"',
                              name="trl") from _err

from srpo.advantages import group_advantages
from srpo.buffers import SPLITS, build_batch, split_spec
from srpo.config import LOCALIZER_OF, METHODS
from srpo.engines.options import VLLMOptions
from srpo.methods import get_method
from srpo.metrics import RESET_COLUMNS, nanmean, reset_metrics

__all__ = ["SRPOSettings", "SRPORollout", "SRPOCallback", "SRPOTrainer", "TRL_TESTED",
           "check_grpo_config", "AGG_OF_LOSS_TYPE"]

#: the TRL versions this module is tested with (pyproject's ``trl`` extra pins the same range)
TRL_TESTED = ">=1.16,<1.17"

#: TRL ``loss_type`` -> our ``agg`` (the loss types whose gradient equals our REINFORCE loss's)
AGG_OF_LOSS_TYPE = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean"}

ENGINE_CHOICES = ("auto", "hf", "vllm", "trl")


def _check_trl_version() -> None:
    import warnings

    from packaging.version import Version

    version = Version(_trl.__version__)
    if not Version("1.16") <= version < Version("1.17"):
        warnings.warn(f"srpo.integrations.trl is tested with trl{TRL_TESTED}; this is "
                      f"{_trl.__version__} (rollout_func and the hooks used are experimental "
                      "or private in TRL)", stacklevel=3)


@dataclass
class SRPOSettings:
    """What SRPO adds to a ``GRPOConfig`` (the rest: learning rate, batch sizes, temperature,
    top_p, optimizer, logging, vLLM mode, distribution: is TRL's).

    Attributes:
        method: ``grpo``, ``rrpo``, ``srpo``, ``oracle``, ``srpo-offset`` or ``fixed-reset``
            (``srpo.methods``; the others are refused with the reason, module docstring).
        split: ``1x4`` (paper), ``2x4`` or ``1x8``; ``num_generations`` is the rollout budget R.
        mask_prefix: mask the copied prefix out of the loss (False: the no-mask ablation).
        max_fresh_chains: cap on fresh chains per prompt while looking for a failure.
        adv_std: advantage normalisation within subgroups (``population``: the paper;
            ``unbiased`` with ``adv_eps = 1e-6``: the release's GRPO baseline).
        adv_eps: added to the std in the advantage's denominator.
        localization_offset: move every localized step this many thoughts earlier (floor 1;
            None: the method's default, 1 for ``srpo-offset``, else 0).
        fixed_position: ``fixed-reset``'s token position (None: SPO-Tree's segment length).
        max_thoughts, max_thought_tokens, max_response_tokens, max_model_len, max_new_tokens:
            the thought rules' caps (``srpo.engines.base.GenerationConfig``; defaults: the tiny
            synthetic task's; the release's are 20, 256, 5120, 8192, None).
        gen_batch_tokens: generation batch budget of the ``hf`` engine (None: no cap).
        answer: what ends a chain (``GenerationConfig.answer``): ``boxed``, or ``fence`` for
            coding tasks (``TrainConfig.task_type = "code"``).
        localization_temperature, localization_top_p, localization_max_new_tokens,
        localization_prompt, localization_stop_at_boxed, localization_fallback: the SRPO
            localization call (``srpo.localize.SelfLocalizer``).
        engine: ``auto``, ``hf``, ``vllm`` or ``trl`` (module docstring).
        model_path: the model's directory, for ``engine="vllm"``.
        vllm: ``VLLMOptions`` of ``engine="vllm"``.
        seed: seeds the sampling and the random resets (mixed with the process index).
        reinforce_minibatches: with several mini-batches per generation, train every one with
            the uncorrected REINFORCE gradient as the release and ``srpo.trainer`` do (TRL then
            does not compute old log-probs at all); False keeps TRL's clipped ratio on its old
            log-probs for mini-batches 2.. (the release's PPO-clip GRPO baseline).
        reset_table: file name of the reset table in ``output_dir`` (None: not written).
    """

    method: str = "srpo"
    split: str = "1x4"
    mask_prefix: bool = True
    max_fresh_chains: int = 12
    adv_std: str = "population"
    adv_eps: float = 0.0
    localization_offset: int | None = None
    fixed_position: int | None = None
    max_thoughts: int = 8
    max_thought_tokens: int = 24
    max_response_tokens: int | None = None
    max_model_len: int | None = 2048
    max_new_tokens: int | None = None
    gen_batch_tokens: int | None = None
    answer: str = "boxed"
    localization_temperature: float = 0.3
    localization_top_p: float = 1.0
    localization_max_new_tokens: int = 12
    localization_prompt: str = "compact"
    localization_stop_at_boxed: bool = True
    localization_fallback: str = "step1"
    engine: str = "auto"
    model_path: str | None = None
    vllm: VLLMOptions = field(default_factory=VLLMOptions)
    seed: int = 0
    reinforce_minibatches: bool = True
    reset_table: str | None = "resets.parquet"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        reason = get_method(self.method).trl
        if reason is None and get_method(self.method).localizer == "entropy":
            reason = ("the entropy rule needs the policy's token entropies inside the rollout "
                      "function, which is not wired to TRL's model")
        if reason is not None:
            raise ValueError(f"method {self.method!r} cannot run in TRL's GRPOTrainer: {reason}; "
                             "run it with experiments/llm_srpo.py")
        if self.localization_offset is None:
            self.localization_offset = int(get_method(self.method).defaults.get(
                "localization_offset", 0))
        if self.split not in SPLITS[1:]:
            raise ValueError(f"split must be one of {SPLITS[1:]}; got {self.split!r}")
        if self.engine not in ENGINE_CHOICES:
            raise ValueError(f"engine must be one of {ENGINE_CHOICES}; got {self.engine!r}")
        if self.engine == "vllm" and self.model_path is None:
            raise ValueError("engine 'vllm' needs model_path (the model's directory)")

    @classmethod
    def from_train_config(cls, config, **overrides) -> SRPOSettings:
        """The settings of a ``srpo.config.TrainConfig`` (its resolved task profile)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"engine", "vllm", "model_path",
                                                              "reinforce_minibatches",
                                                              "reset_table", "fixed_position",
                                                              "answer"}
        values = {n: getattr(config, n) for n in names}
        values["vllm"] = config.vllm_options()
        values["reinforce_minibatches"] = config.loss == "reinforce"
        values["fixed_position"] = getattr(config.options(), "position", None)
        values["answer"] = "fence" if getattr(config, "task_type", "qa") == "code" else "boxed"
        values.update(overrides)
        return cls(**values)

    def generation_config(self, temperature: float, top_p: float, logprobs: bool = False):
        from srpo.engines.base import GenerationConfig

        return GenerationConfig(
            temperature=temperature, top_p=top_p, max_thoughts=self.max_thoughts,
            max_thought_tokens=self.max_thought_tokens,
            max_response_tokens=self.max_response_tokens, max_model_len=self.max_model_len,
            max_new_tokens=self.max_new_tokens, max_batch_tokens=self.gen_batch_tokens,
            logprobs=logprobs, answer=self.answer)


def check_grpo_config(args, settings: SRPOSettings) -> None:
    """Raise ValueError (naming the ``GRPOConfig`` field) unless TRL computes SRPO's update.

    - ``num_generations`` is the rollout budget R of the split (>= 8 for 1x4 / 1x8, 12 for 2x4).
    - Every process holds whole blocks of R rows: ``per_device_train_batch_size *
      steps_per_generation`` divisible by R (a reset needs its base chains on the same process).
    - ``scale_rewards="none"``: the advantages are SRPO's z-scores already.
    - ``loss_type`` in ``AGG_OF_LOSS_TYPE``; ``mask_truncated_completions=False`` (a capped
      chain is trained on, as in our trainer); ``top_entropy_quantile=1``.
    - With ``use_vllm``: ``vllm_importance_sampling_correction=False`` (the rollouts are the
      policy's own; the correction would reweight them), and colocated vLLM with tensor
      parallel 1 (our rollouts differ per process; TRL's colocated TP groups would need the same
      prompts on every rank of a group).
    """
    def fail(name: str, message: str) -> None:
        raise ValueError(f"GRPOConfig.{name} {message}")

    r = int(args.num_generations)
    split_spec(settings.split if settings.method != "grpo" else "grpo", r)  # raises if too small
    if settings.split == "2x4" and r < 8:
        fail("num_generations", f"must be >= 8 for split 2x4; got {r}")
    per_process = int(args.per_device_train_batch_size) * int(args.steps_per_generation)
    if per_process % r:
        fail("per_device_train_batch_size",
             f"x steps_per_generation = {per_process} must be a multiple of num_generations = "
             f"{r}: every prompt's {r} rollouts must be on one process (a reset needs its base "
             "chains)")
    if args.scale_rewards not in ("none", False):
        fail("scale_rewards", f"must be 'none' (the rewards are SRPO's advantages already); got "
                              f"{args.scale_rewards!r}")
    if args.loss_type not in AGG_OF_LOSS_TYPE:
        fail("loss_type", f"must be one of {tuple(AGG_OF_LOSS_TYPE)}; got {args.loss_type!r}")
    if getattr(args, "mask_truncated_completions", False):
        fail("mask_truncated_completions", "must be False (capped chains are trained on)")
    if getattr(args, "top_entropy_quantile", 1.0) != 1.0:
        fail("top_entropy_quantile", "must be 1.0")
    if getattr(args, "use_vllm", False):
        if getattr(args, "vllm_importance_sampling_correction", False):
            fail("vllm_importance_sampling_correction",
                 "must be False (SRPO trains on the policy's own rollouts, uncorrected)")
        if (getattr(args, "vllm_mode", "server") == "colocate"
                and int(getattr(args, "vllm_tensor_parallel_size", 1)) != 1):
            fail("vllm_tensor_parallel_size",
                 "must be 1 in colocate mode (each process decodes its own reset groups); use "
                 "server mode for tensor parallel generation")


def _prompt_key(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    raise ValueError("SRPORollout takes text prompts (the 'prompt' column of "
                     "SRPORollout.dataset); got a conversational prompt")


class SRPORollout:
    """TRL ``rollout_func`` that builds SRPO / RRPO / oracle / GRPO batches with ``srpo.buffers``.

    Args:
        task: ``prompt(problem)``, ``grade(problem, text)``, ``first_error``/``has_step_verifier``
            (``srpo.tasks``).
        settings: ``SRPOSettings``.
        problems: the training problems (more can be registered with ``dataset``).
    """

    def __init__(self, task, settings: SRPOSettings | None = None, problems=None) -> None:
        self.task = task
        self.settings = settings if settings is not None else SRPOSettings()
        self._problems: dict[str, Any] = {}
        self.engine = None
        #: ids that end a chain (None: the tokenizer's and the policy's at the first rollout;
        #: ``SRPOTrainer`` sets them before TRL aligns the model's eos with the tokenizer's)
        self.eos_ids = None
        self._localizer = None
        self._rng = None
        self._generator = None
        self._synced_step = None
        #: reset rows of this process (``srpo.metrics.RESET_COLUMNS``), appended per generation
        self.reset_rows: list[dict] = []
        #: the last batch's accounting and statistics (also logged as ``srpo/*`` metrics)
        self.last_stats: dict[str, float] = {}
        self.last_advantages: list[float] = []
        self.totals = {"generated_tokens": 0, "rollouts": 0}
        self._pending_stats: dict[str, float] | None = None
        self.__name__ = "srpo_rollout"

        def srpo_advantage(*args, **kwargs):  # TRL names the reward metrics after the function
            return self._reward(*args, **kwargs)

        #: the reward function to pass to ``GRPOTrainer(reward_funcs=[...])``
        self.reward = srpo_advantage
        if problems is not None:
            self.register(problems)

    # -- data -------------------------------------------------------------------------------------
    def register(self, problems) -> list[str]:
        """Remember ``problems`` by their prompt text; returns the prompts."""
        prompts = []
        for p in problems:
            text = self.task.prompt(p)
            self._problems.setdefault(text, p)
            prompts.append(text)
        return prompts

    def dataset(self, problems):
        """A ``datasets.Dataset`` with a ``prompt`` column (the task's prompts) for TRL."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": self.register(problems)})

    # -- the reward function ----------------------------------------------------------------------
    def _reward(self, prompts=None, completions=None, srpo_advantage=None, log_metric=None,
                **kwargs) -> list[float]:
        """Reward function for TRL: SRPO's advantage of each row (with ``scale_rewards="none"``
        TRL's group mean-centring leaves it unchanged); logs the ``srpo/*`` metrics."""
        if srpo_advantage is None:
            raise ValueError("the srpo_advantage column is missing: pass rollout_func=this "
                             "SRPORollout to the GRPOTrainer")
        if log_metric is not None and self._pending_stats is not None:
            for name, value in self._pending_stats.items():
                if value is not None and np.isfinite(value):
                    log_metric(f"srpo/{name}", float(value))
            self._pending_stats = None
        return [float(a) for a in srpo_advantage]

    # -- the rollout function ---------------------------------------------------------------------
    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        training = bool(getattr(trainer.model, "training", True))
        g = int(trainer.num_generations if training else trainer.num_generations_eval)
        if len(prompts) % g:
            raise ValueError(f"rollout_func got {len(prompts)} prompts, not whole blocks of "
                             f"num_generations = {g}: make per_device_train_batch_size x "
                             f"steps_per_generation a multiple of {g}")
        keys = [_prompt_key(p) for p in prompts]
        blocks = [keys[i:i + g] for i in range(0, len(keys), g)]
        for block in blocks:
            if any(k != block[0] for k in block):
                raise ValueError("rollout_func expects each prompt repeated num_generations "
                                 "times consecutively (TRL's RepeatSampler)")
        try:
            problems = [self._problems[block[0]] for block in blocks]
        except KeyError as err:
            raise ValueError("a prompt that SRPORollout does not know: build the dataset with "
                             "SRPORollout.dataset(problems)") from err
        if getattr(trainer, "use_vllm", False) and getattr(
                trainer, "vllm_importance_sampling_correction", False):
            raise ValueError("set GRPOConfig.vllm_importance_sampling_correction=False with "
                             "SRPO rollouts")
        accelerator = trainer.accelerator
        tokenizer = getattr(trainer, "_tokenizer", None) or trainer.processing_class
        self._setup_random(accelerator.process_index)
        method = self.settings.method if training else "grpo"
        split = "grpo" if method == "grpo" else self.settings.split
        with self._engine_for(trainer, tokenizer) as engine:
            localizer = self._localizer_for(method, engine, tokenizer)
            batch = build_batch(problems, self.task, engine, tokenizer, split, localizer,
                                self._rng, self._generator, rollouts_per_prompt=g,
                                max_fresh_chains=max(self.settings.max_fresh_chains, g),
                                mask_prefix=self.settings.mask_prefix,
                                localization_offset=self.settings.localization_offset)
        samples = sorted(batch.samples, key=lambda s: s.prompt_index)  # stable: base, suffixes
        counts = np.bincount([s.prompt_index for s in samples], minlength=len(problems))
        if not (counts == g).all():  # pragma: no cover - build_batch's contract
            raise RuntimeError(f"build_batch returned {counts.tolist()} rollouts per prompt, "
                               f"expected {g}")
        rewards = np.array([s.reward for s in samples], dtype=np.float64)
        groups = np.array([s.group_id for s in samples])
        advantages = group_advantages(rewards, groups, std=self.settings.adv_std,
                                      std_eps=self.settings.adv_eps)
        self.last_advantages = advantages.tolist()
        self._record(batch, samples, rewards, advantages, trainer, training, len(prompts))
        record_logprobs = bool(getattr(trainer, "use_vllm", False))
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": None,
                                "env_mask": [], "srpo_advantage": [], "srpo_reward": [],
                                "srpo_group": [], "srpo_is_reset": []}
        if record_logprobs:
            out["logprobs"] = []
        offset = accelerator.process_index * 1_000_000
        for s, a in zip(samples, advantages):
            out["prompt_ids"].append(list(s.prompt_ids))
            out["completion_ids"].append(list(s.response_ids))
            out["env_mask"].append([int(m) for m in s.loss_mask])
            out["srpo_advantage"].append(float(a))
            out["srpo_reward"].append(float(s.reward))
            out["srpo_group"].append(offset + int(s.group_id))
            out["srpo_is_reset"].append(bool(s.is_reset_group))
            if record_logprobs:  # not kept by build_batch: NaN = "no correction" to TRL
                out["logprobs"].append([float("nan")] * len(s.response_ids))
        return out

    # -- internals --------------------------------------------------------------------------------
    def _setup_random(self, process_index: int) -> None:
        if self._rng is not None:
            return
        import torch

        seeds = np.random.SeedSequence([int(self.settings.seed), int(process_index)]).spawn(2)
        self._rng = np.random.default_rng(seeds[0])
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(int(seeds[1].generate_state(1, dtype=np.uint64)[0] % 2**62))

    def _engine_kind(self, trainer) -> str:
        kind = self.settings.engine
        if kind == "auto":
            kind = "trl" if getattr(trainer, "use_vllm", False) else "hf"
        if kind == "trl" and not getattr(trainer, "use_vllm", False):
            raise ValueError("engine 'trl' needs GRPOConfig.use_vllm=True")
        return kind

    @contextlib.contextmanager
    def _engine_for(self, trainer, tokenizer):
        kind = self._engine_kind(trainer)
        args = trainer.args
        config = self.settings.generation_config(float(args.temperature), float(args.top_p or 1.0),
                                                 logprobs=False)
        if kind == "trl":
            if self.engine is None:
                self.engine = _trl_vllm_engine(trainer, tokenizer, config, self.eos_ids)
            self.engine.config = config
            yield self.engine
            return
        policy_context = _gathered_policy(trainer)
        with policy_context as policy:
            if kind == "hf":
                from srpo.engines.hf import RolloutEngine

                if self.engine is None:
                    self.engine = RolloutEngine(policy, tokenizer, config,
                                                device=trainer.accelerator.device,
                                                eos_ids=self.eos_ids)
                self.engine.model = policy  # the (gathered) policy of this step
                self.engine.config = config
                yield self.engine
                return
            from srpo.engines import make_engine

            step = int(trainer.state.global_step)
            if self.engine is None:
                self.engine = make_engine("vllm", policy, tokenizer, config,
                                          device=str(trainer.accelerator.device),
                                          model_path=self.settings.model_path,
                                          seed=self.settings.seed, options=self.settings.vllm,
                                          eos_ids=self.eos_ids)
            elif self._synced_step != step:
                self.engine.sync(policy)
            self._synced_step = step
            self.engine.config = config
            yield self.engine

    def _localizer_for(self, method: str, engine, tokenizer):
        from srpo.localize import make_localizer

        name = LOCALIZER_OF[method]
        if name == "self":
            s = self.settings
            return make_localizer("self", task=self.task, engine=engine, tokenizer=tokenizer,
                                  max_new_tokens=s.localization_max_new_tokens,
                                  temperature=s.localization_temperature,
                                  top_p=s.localization_top_p,
                                  stop_at_boxed=s.localization_stop_at_boxed,
                                  prompt=s.localization_prompt, fallback=s.localization_fallback)
        if self._localizer is None or getattr(self._localizer, "name", None) != name:
            kw = {}
            if name == "fixed":
                from srpo.methods.spo_tree import segment_length

                kw["position"] = segment_length(self.settings.fixed_position,
                                                self.settings.max_response_tokens)
            self._localizer = make_localizer(name, task=self.task, **kw)
        return self._localizer

    def _record(self, batch, samples, rewards, advantages, trainer, training, n_rows) -> None:
        acc = batch.accounting.as_dict()
        n_proc = int(trainer.accelerator.num_processes)
        self.totals["generated_tokens"] += acc["generated_tokens"]
        self.totals["rollouts"] += len(samples)
        rm = reset_metrics(batch.events)
        # TRL averages a logged metric over processes: counts are scaled by the number of
        # processes so that the logged value is the total over processes
        stats = {k: acc[k] * n_proc for k in (
            "generated_tokens", "tokens_base", "tokens_parent", "tokens_discarded",
            "tokens_suffix", "tokens_localization", "chains_fresh", "chains_discarded",
            "chains_suffix", "localization_calls")}
        stats.update({
            "total_generated_tokens": self.totals["generated_tokens"] * n_proc,
            "total_rollouts": self.totals["rollouts"] * n_proc,
            "reward_mean": float(rewards.mean()),
            "pass_rate": nanmean(batch.first_round_rewards),
            "reset_rate": batch.prompts_reset / max(batch.n_prompts, 1),
            "adv_abs_mean": float(np.abs(advantages).mean()),
            "localization_fallbacks": float(sum(r.is_fallback for r in batch.localizations)),
            "time_fresh_s": acc["seconds_fresh"], "time_localization_s":
                acc["seconds_localization"], "time_suffix_s": acc["seconds_suffix"],
            **{k: rm[k] for k in ("reset_step", "reset_rel_pos", "clean_prefix_rate",
                                  "suffix_pass_at_k") if k in rm},
        })
        self.last_stats = stats
        self._pending_stats = stats
        if not training:
            return
        iteration = int(trainer.state.global_step) + 1
        base = int(trainer.accelerator.process_index) * batch.n_prompts
        for e in batch.events:
            self.reset_rows.append({
                "method": self.settings.method, "seed": self.settings.seed,
                "iteration": iteration, "prompt_index": base + e.prompt_index, "n": e.n,
                "k": e.k, "source": e.source, "fallback": e.fallback, "raw_k": e.raw,
                "first_error": e.first_error, "deviation": e.deviation, "clean": e.clean,
                "prefix_tokens": e.prefix_tokens, "n_suffixes": len(e.suffix_rewards),
                "suffix_successes": e.suffix_successes, "suffix_pass_at_k": e.suffix_pass_at_k,
                "prefix_split": e.prefix_split, "prefix_exact": e.prefix_exact,
            })

    def close(self) -> None:
        """Release the engine (our own vLLM engine's memory; TRL's vLLM stays TRL's)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None


@contextlib.contextmanager
def _gathered_policy(trainer):
    """The policy with its full parameters on this process (DeepSpeed ZeRO-3 gathers them, as
    TRL does for its own generation); the unwrapped module otherwise."""
    try:
        from trl.models import unwrap_model_for_generation
    except ImportError:  # pragma: no cover - other TRL layouts
        unwrap_model_for_generation = None
    if unwrap_model_for_generation is None or not hasattr(trainer, "model_wrapped"):
        yield trainer.accelerator.unwrap_model(trainer.model)
        return
    args = trainer.args
    dist = getattr(trainer, "_dist", None)
    summon = (dist.summon_full_params(trainer.model_wrapped, recurse=False)  # FSDP
              if dist is not None and hasattr(dist, "summon_full_params")
              else contextlib.nullcontext())
    with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            gather_deepspeed3_params=bool(getattr(args, "ds3_gather_for_generation", True)),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
    ) as model, summon:
        yield model


def _trl_vllm_engine(trainer, tokenizer, config, eos=None):
    """Our engine over TRL's vLLM: the colocated ``LLM`` or the server (a client per process)."""
    from srpo.engines.vllm import VLLMEngine

    generation = trainer.vllm_generation
    if eos is None:
        eos = VLLMEngine.default_eos_ids(tokenizer,
                                         trainer.accelerator.unwrap_model(trainer.model))
    if generation.mode == "colocate":
        return VLLMEngine.from_llm(generation.llm, tokenizer, config, eos_ids=eos)
    client = getattr(generation, "vllm_client", None)
    if client is None:  # TRL opens the client on the main process only: open one here
        from trl.generation.vllm_client import VLLMClient

        base = generation.server_base_url or (
            f"http://{generation.server_host}:{generation.server_port}")
        client = VLLMClient(base_url=base, group_port=generation.group_port,
                            connection_timeout=generation.server_timeout)
    max_len = getattr(generation, "max_model_length", None) or config.max_model_len or 8192
    return VLLMEngine.from_client(client, tokenizer, config, int(max_len), eos_ids=eos)


def _model_eos_ids(model, tokenizer) -> frozenset[int]:
    """Every eos id of the tokenizer and of the model (a directory's configs, or a model's):
    instruction models end a turn with a second id that TRL's alignment would drop."""
    from srpo.engines.base import ThoughtEngine, eos_ids_from_dir

    if isinstance(model, (str, Path)):
        from srpo.engines.vllm import base_model_dir

        return eos_ids_from_dir(tokenizer, base_model_dir(model))
    return ThoughtEngine.default_eos_ids(tokenizer, model)


def _write_resets(rollout: SRPORollout, output_dir: str) -> None:
    """Gather every process's reset rows and write the table on the main process."""
    name = rollout.settings.reset_table
    if name is None:
        return
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    rows = rollout.reset_rows
    if state.num_processes > 1:
        rows = gather_object(rows)
    if state.is_main_process:
        import pandas as pd

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(rows, columns=list(RESET_COLUMNS))
        frame = frame.sort_values(["iteration", "prompt_index"], kind="stable")
        tmp = out / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(out / name)


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class SRPOCallback(_callback_base()):
    """Writes ``resets.parquet`` (every reset of every process) at each save and at the end of
    training, into ``output_dir``; every process must have it (the rows are gathered)."""

    def __init__(self, rollout: SRPORollout) -> None:
        self.rollout = rollout

    def on_save(self, args, state, control, **kwargs):
        _write_resets(self.rollout, args.output_dir)

    def on_train_end(self, args, state, control, **kwargs):
        _write_resets(self.rollout, args.output_dir)


def _grpo_trainer_base():
    from trl import GRPOTrainer

    return GRPOTrainer


class SRPOTrainer(_grpo_trainer_base()):
    """``GRPOTrainer`` that trains with SRPO / RRPO / oracle resets (module docstring).

    Args:
        model: the policy (a model, a path, or a peft model), as for ``GRPOTrainer``.
        args: ``trl.GRPOConfig``; checked by ``check_grpo_config``.
        task: the task (``srpo.tasks``: ``prompt``, ``grade``, ``first_error``).
        train_problems: the training problems (the dataset is built from their prompts).
        settings: ``SRPOSettings`` (method, split, thought caps, localization, engine).
        eval_problems: optional evaluation problems (plain fresh chains, TRL's eval loop).
        **kwargs: passed to ``GRPOTrainer`` (``processing_class``, ``callbacks``, ``peft_config``...).
    """

    def __init__(self, model, args, task, train_problems, settings: SRPOSettings | None = None,
                 eval_problems=None, **kwargs) -> None:
        settings = settings if settings is not None else SRPOSettings()
        _check_trl_version()
        check_grpo_config(args, settings)
        rollout = SRPORollout(task, settings)
        tokenizer = kwargs.get("processing_class")
        if tokenizer is not None:  # before TRL aligns the model's eos ids with the tokenizer's
            rollout.eos_ids = _model_eos_ids(model, tokenizer)
        train_dataset = rollout.dataset(train_problems)
        eval_dataset = rollout.dataset(eval_problems) if eval_problems is not None else None
        callback = SRPOCallback(rollout)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [callback]
        self.srpo_rollout = rollout
        self.srpo_settings = settings
        super().__init__(model=model, reward_funcs=[rollout.reward], args=args,
                         train_dataset=train_dataset, eval_dataset=eval_dataset,
                         rollout_func=rollout, callbacks=callbacks, **kwargs)

    @contextlib.contextmanager
    def _without_old_logprobs(self):
        """With ``reinforce_minibatches`` (the release's uncorrected REINFORCE on every
        mini-batch) TRL's old log-probs would be thrown away: keep TRL from computing them, a
        no-grad forward pass over the whole generation. TRL 1.16 computes them when
        ``gradient_accumulation_steps`` is not a multiple of ``steps_per_generation x
        num_iterations`` (or for vLLM's importance-sampling correction, which
        ``check_grpo_config`` forbids), a test it makes only in
        ``_generate_and_score_completions``; during that call it reads 0. With ``ppo-clip``
        (the release's GRPO baseline) TRL's old log-probs are kept and used by its clipped
        loss."""
        if not self.srpo_settings.reinforce_minibatches:
            yield
            return
        saved = self.args.gradient_accumulation_steps
        self.args.gradient_accumulation_steps = 0
        try:
            yield
        finally:
            self.args.gradient_accumulation_steps = saved

    def _generate_and_score_completions(self, inputs):
        with self._without_old_logprobs():
            output = super()._generate_and_score_completions(inputs)
        import torch

        # SRPO's advantages exactly (TRL's r - mean of the block equals them up to rounding)
        adv = torch.as_tensor(self.srpo_rollout.last_advantages, dtype=output["advantages"].dtype,
                              device=output["advantages"].device)
        if adv.shape != output["advantages"].shape:  # pragma: no cover - the rollout's contract
            raise RuntimeError(f"advantages of shape {tuple(adv.shape)}, TRL expects "
                               f"{tuple(output['advantages'].shape)}")
        output["advantages"] = adv
        if self.srpo_settings.reinforce_minibatches:
            output.pop("old_per_token_logps", None)  # ratio 1 on every mini-batch: REINFORCE
        return output
