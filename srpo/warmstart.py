"""Warm start of the tiny CPU policy: supervised fine-tuning to an imperfect, improvable policy.

RL needs a policy that fails often enough for resets to have parents and succeeds often enough for
outcome differences to exist. We fine-tune the tiny model (``srpo.model.build_tiny_model``) on
synthetic solutions of the chained modular-arithmetic task (``srpo.tasks.ModularArithmeticTask``)
with a controllable per-step error rate, plus on localization examples.

Imperfect solutions ("misconceptions"). A fixed random subset of the arithmetic facts
``(left, op, operand)`` -- a fraction ``confused_fraction`` of them, drawn from the seed -- is
*confused*: in the training data such a step writes one fixed wrong value with probability
``confusion_prob`` and the right one otherwise; other facts are written correctly, except for an
extra i.i.d. error with probability ``noise_error_rate``. The per-step error rate of the data is
about ``confused_fraction * confusion_prob + noise_error_rate``. With ``confusion_prob > 0.5`` the
*most likely* value of a confused fact is wrong, so the greedy policy is imperfect too (i.i.d.
label noise alone would leave the greedy policy nearly perfect), while the right value keeps a
fair sampling probability, so RL can discover it and move the mode: a learnable improvement.

Localization examples. Prompt = the localization prompt (``srpo.localize``) over a failed
solution drawn from the same distribution (plus extra i.i.d. errors so that first errors fall at
every position); target = ``\\boxed{first_error}``. This is the CPU analogue of an instruction
model's ability to answer the localization prompt about its own chains.

Follow-up examples (``followup_fraction``, off by default). SCoRe's second attempt and
Critique-GRPO's refinement are sampled from prompt + the first solution + an instruction
(``srpo.methods.score.CORRECTION_MESSAGE``; ``srpo.methods.critique_grpo.CRITIQUE_MESSAGE`` with
the true verdict). A model never trained on that layout answers it with garbage, so those two
methods cannot be compared on it. With ``followup_fraction > 0`` a share of the examples are such
prompts, and their target is a *fresh, independent* solution from the same distribution: the
model learns the layout, not to correct (a correction skill would decide the comparison in
advance). ``experiments/llm_srpo.py --method all`` trains this as a short second stage on top of
the default warm start (``init``), for every method of the comparison alike.

Coverage family (``experiments/llm_coverage.py``). With ``hard_steps`` / ``hard_ops`` the data
come from ``ModularArithmeticTask(hard_steps=..., hard_ops=...)`` (one hard step per problem at a
position drawn from ``hard_steps``) and ``confused_ops`` restricts the misconceptions to the facts
of those operators, so the policy's errors concentrate on the hard step wherever it sits. Trained
on every position, one warm start serves all positions of the family. At their defaults these
fields leave the data, the model and the cache key exactly as before.

The result is cached on disk under a hash of the configuration (``WarmStartConfig.key``): a rerun
loads it. The cache lives in ``$CREDIT_RESETS_CACHE`` or, without it, ``~/.cache/credit-resets``
(``default_cache_dir``); ``experiments/llm_srpo.py --cache-dir DIR`` moves it. Everything is seeded;
the run is deterministic on CPU for a fixed thread count (the thread count is part of the key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srpo.localize import encode_localization_prompt
from srpo.model import build_tiny_model, load_model, save_model
from srpo.tasks import ModArithProblem, ModularArithmeticTask, apply_op, format_step
from srpo.tokenizer import build_tokenizer

__all__ = ["WarmStartConfig", "warm_start", "warm_start_path", "is_cached", "MisconceptionWriter",
           "default_cache_dir", "followup_stage", "make_writer", "FAMILIES"]

#: WarmStartConfig fields added after cached warm starts and follow-up stages existed, with
#: their defaults: left out of every key (and of a follow-up's ``init``) at those values
_LATER_FIELDS = (("hard_fraction", 1.0), ("family", "modarith"))

#: task families of the warm start (``WarmStartConfig.family``)
FAMILIES = ("modarith", "code")

#: bump when the data or training recipe changes, so old caches are not reused
RECIPE_VERSION = 1


def default_cache_dir() -> Path:
    """``$CREDIT_RESETS_CACHE`` or ``~/.cache/credit-resets``."""
    import os

    root = os.environ.get("CREDIT_RESETS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "credit-resets"


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the warm start (every field enters the cache key).

    Attributes:
        n_steps: H, operations per problem of the synthetic task.
        modulus: modulus of the synthetic task.
        ops: operators of the synthetic task.
        confused_fraction: fraction of arithmetic facts that are confused (misconceptions).
        confusion_prob: probability that a confused fact is written with its wrong value.
        noise_error_rate: extra i.i.d. per-step error probability on every step.
        localization_fraction: fraction of training examples that are localization examples.
        localization_extra_error: i.i.d. per-step error rate added when drawing failed chains for
            localization examples (spreads first errors over all positions).
        followup_fraction: fraction of training examples that are follow-up examples (module
            docstring; 0: none, the default).
        n_layer, d_model, n_head: tiny model size.
        steps: optimizer steps.
        batch_size: examples per step.
        lr: peak AdamW learning rate (linear warm-up for 5% of steps, cosine decay to 10%).
        weight_decay: AdamW weight decay.
        seed: seeds the model initialisation, the misconception table and the data stream.
        num_threads: torch CPU threads during the warm start (1: a second job on a 2-core
            machine does not oversubscribe it).
        eval_size: held-out problems for the evaluation stored in ``warmstart.json``.
        hard_steps, hard_ops, hard_operands, easy_operands: the task's coverage knob
            (``srpo.tasks.ModularArithmeticTask``); empty ``hard_steps``: the plain task.
        confused_ops: operators whose facts may be confused (None: every operator in ``ops``).
        hard_fraction: share of training problems that have the hard step
            (``ModularArithmeticTask.hard_fraction``; 1: all, the default).
        family: ``modarith`` (the chained arithmetic task, default) or ``code`` (the tiny coding
            task ``srpo.code.tiny.TinyCodeTask``: its solutions by
            ``srpo.code.tiny.CodeMisconceptionWriter`` with the confusion and noise settings
            above; ``n_steps``, ``modulus``, ``ops`` and the coverage fields are unused).
        init: a previous stage: ``WarmStartConfig`` fields of the warm start whose model this one
            continues training (it is trained or loaded from the cache first; same model size);
            None (default): a freshly initialised model.
    """

    n_steps: int = 6
    modulus: int = 10
    ops: tuple[str, ...] = ("+", "-", "*")
    confused_fraction: float = 0.2
    confusion_prob: float = 0.6
    noise_error_rate: float = 0.02
    localization_fraction: float = 0.25
    localization_extra_error: float = 0.15
    followup_fraction: float = 0.0
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    num_threads: int = 1
    eval_size: int = 128
    hard_steps: tuple[int, ...] = ()
    hard_ops: tuple[str, ...] = ("*",)
    hard_operands: tuple[int, ...] = ()
    easy_operands: tuple[int, ...] = ()
    confused_ops: tuple[str, ...] | None = None
    hard_fraction: float = 1.0
    init: dict | None = None
    family: str = "modarith"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}; got {self.family!r}")
        # lists (e.g. from a JSON config) become tuples, so the config stays hashable
        for name in ("ops", "hard_steps", "hard_ops", "hard_operands", "easy_operands",
                     "confused_ops"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        if self.confused_ops is not None and any(
                op not in ("+", "-", "*") for op in self.confused_ops):
            raise ValueError(f"confused_ops must be None or a subset of ('+', '-', '*'); got "
                             f"{self.confused_ops!r}")
        for name in ("confused_fraction", "confusion_prob", "noise_error_rate",
                     "localization_fraction", "localization_extra_error", "followup_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {v}")
        if self.init is not None:
            prev = WarmStartConfig(**self.init)
            if (prev.n_layer, prev.d_model, prev.n_head) != (self.n_layer, self.d_model,
                                                              self.n_head):
                raise ValueError(
                    f"init: the previous stage's model size (n_layer, d_model, n_head) = "
                    f"{(prev.n_layer, prev.d_model, prev.n_head)} must equal this one's "
                    f"{(self.n_layer, self.d_model, self.n_head)}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1; got {self.steps}, "
                             f"{self.batch_size}")

    @property
    def key(self) -> str:
        """Hash of the configuration (all fields but ``eval_size``) and the recipe version: the
        cache directory name."""
        fields = dataclasses.asdict(self)
        fields.pop("eval_size")  # only sizes the report, not the model
        # the coverage-family fields enter the key only when set, so that the keys (and caches)
        # of plain-task warm starts stay what they were before these fields existed
        for name, default in (("hard_steps", ()), ("hard_ops", ("*",)), ("hard_operands", ()),
                              ("easy_operands", ()), ("confused_ops", None), ("init", None),
                              ("followup_fraction", 0.0), *_LATER_FIELDS):
            if getattr(self, name) == default:
                fields.pop(name)
        payload = json.dumps({"v": RECIPE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def steps_per_solution(self) -> int:
        """Thoughts of a correct solution (``n_steps``; the tiny coding task: 3)."""
        if self.family == "code":
            from srpo.code.tiny import TINY_STEPS

            return TINY_STEPS
        return self.n_steps

    @property
    def thought_tokens(self) -> int:
        """``max_thought_tokens`` of the evaluation's engine (a code thought is longer)."""
        return 48 if self.family == "code" else 24

    def task(self):
        """The task the data come from (``ModularArithmeticTask`` or ``TinyCodeTask``)."""
        if self.family == "code":
            from srpo.code.tiny import TinyCodeTask

            return TinyCodeTask()
        return ModularArithmeticTask(n_steps=self.n_steps, modulus=self.modulus, ops=self.ops,
                                     hard_steps=self.hard_steps, hard_ops=self.hard_ops,
                                     hard_operands=self.hard_operands,
                                     easy_operands=self.easy_operands,
                                     hard_fraction=self.hard_fraction)


def followup_stage(base: WarmStartConfig, fraction: float = 0.3, steps: int = 400,
                   lr: float = 1e-3) -> dict:
    """``TrainConfig.warmstart`` overrides of a second stage that continues ``base`` with
    follow-up examples (module docstring): ``{"init": base's fields, "followup_fraction", "steps",
    "lr"}``."""
    init = {k: v for k, v in dataclasses.asdict(base).items() if k != "init"}
    # fields added after follow-up stages existed stay out at their defaults, so that the
    # follow-up's key (its cache) and the run keys that embed this dict are what they were
    for name, default in _LATER_FIELDS:
        if init[name] == default:
            init.pop(name)
    if base.init is not None:
        init["init"] = base.init
    return {"init": init, "followup_fraction": fraction, "steps": steps, "lr": lr}


class MisconceptionWriter:
    """Writes solutions with a fixed table of confused facts (see the module docstring).

    Args:
        config: the warm-start configuration (task, confusion and noise settings, seed).
    """

    def __init__(self, config: WarmStartConfig) -> None:
        self.config = config
        m = config.modulus
        rng = np.random.default_rng([config.seed, 7919])
        self.wrong_value: dict[tuple[int, str, int], int] = {}
        if config.confused_ops is None:
            ops = config.ops
        else:  # the coverage family: only the hard operators' facts may be confused
            ops = tuple(op for op in dict.fromkeys((*config.ops, *config.hard_ops))
                        if op in config.confused_ops)
        for left in range(m):
            for op in ops:
                for operand in range(1, m):
                    if (config.confused_ops is not None and op in config.hard_ops
                            and config.hard_operands and operand not in config.hard_operands):
                        continue  # a hard-step fact the task never asks
                    if rng.random() < config.confused_fraction:
                        right = apply_op(left, op, operand, m)
                        self.wrong_value[(left, op, operand)] = int(
                            (right + rng.integers(1, m)) % m
                        )

    def solution(self, problem: ModArithProblem, rng: np.random.Generator,
                 extra_error: float = 0.0) -> list[str]:
        """Thoughts of one solution (each ends with the delimiter); errors propagate."""
        c = self.config
        thoughts, previous = [], problem.start
        for index, (op, operand) in enumerate(problem.ops, start=1):
            value = apply_op(previous, op, operand, problem.modulus)
            wrong = self.wrong_value.get((previous, op, operand))
            if wrong is not None and rng.random() < c.confusion_prob:
                value = wrong
            elif rng.random() < c.noise_error_rate + extra_error:
                value = int((value + rng.integers(1, problem.modulus)) % problem.modulus)
            thoughts.append(
                format_step(previous, op, operand, value, final=index == problem.n_steps)
            )
            previous = value
        return thoughts


def make_writer(config: WarmStartConfig):
    """The solution writer of ``config``'s family (misconceptions, noise)."""
    if config.family == "code":
        from srpo.code.tiny import CodeMisconceptionWriter

        return CodeMisconceptionWriter(config.confused_fraction, config.confusion_prob,
                                       config.noise_error_rate, config.seed)
    return MisconceptionWriter(config)


def _failed(task, problem, thoughts) -> bool:
    """Whether written thoughts are a wrong solution (the tiny coding task decides by its step
    verifier, without the sandbox)."""
    check = getattr(task, "writer_failed", None)
    if check is not None:
        return bool(check(problem, thoughts))
    return task.grade(problem, "".join(thoughts)) < 0.5


def _followup_example(task, writer, tokenizer, problem, rng):
    """prompt + a first solution + a follow-up instruction (SCoRe's, or Critique-GRPO's with the
    true verdict) -> an independent fresh solution (module docstring)."""
    from srpo.methods.critique_grpo import CRITIQUE_MESSAGE
    from srpo.methods.score import CORRECTION_MESSAGE

    first_thoughts = writer.solution(problem, rng)
    first = "".join(first_thoughts)
    if rng.random() < 0.5:
        message = CORRECTION_MESSAGE
    else:
        right = not _failed(task, problem, first_thoughts)
        message = CRITIQUE_MESSAGE.format(verdict="correct" if right else "incorrect")
    prompt = (tokenizer.encode(task.prompt(problem))
              + tokenizer.encode(first, add_special_tokens=False)
              + tokenizer.encode(message, add_special_tokens=False))
    target = tokenizer.encode("".join(writer.solution(problem, rng)), add_special_tokens=False)
    return prompt, target


def _examples(config, task, writer, tokenizer, rng, n):
    """n (prompt_ids, target_ids) pairs: solutions, localization and follow-up examples."""
    out = []
    for _ in range(n):
        problem = task.sample(1, rng)[0]
        prompt_text = task.prompt(problem)
        if config.followup_fraction and rng.random() < config.followup_fraction:
            out.append(_followup_example(task, writer, tokenizer, problem, rng))
            continue
        if rng.random() < config.localization_fraction:
            for _attempt in range(50):
                thoughts = writer.solution(problem, rng, config.localization_extra_error)
                fe = task.first_error(problem, thoughts)
                if fe is not None and _failed(task, problem, thoughts):
                    break
                problem = task.sample(1, rng)[0]
                prompt_text = task.prompt(problem)
            else:  # pragma: no cover - practically unreachable
                continue
            prompt = encode_localization_prompt(tokenizer, prompt_text, thoughts)
            target = tokenizer.encode(f"\\boxed{{{fe}}}", add_special_tokens=False)
        else:
            thoughts = writer.solution(problem, rng)
            prompt = tokenizer.encode(prompt_text)
            target = tokenizer.encode("".join(thoughts), add_special_tokens=False)
        out.append((prompt, target))
    return out


def _batch_loss(model, pairs, pad_id):
    length = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    for i, (p, t) in enumerate(pairs):
        seq = p + t
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(t)
        mask[i, : len(seq)] = 1
    return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss


def _evaluate(model, tokenizer, config):
    """Greedy and sampled pass rates, and greedy localization accuracy, on held-out problems."""
    from srpo.rollout import GenerationConfig, RolloutEngine

    task = config.task()
    rng = np.random.default_rng([config.seed, 104729])
    problems = task.sample(config.eval_size, rng)
    n_steps = config.steps_per_solution
    engine = RolloutEngine(model, tokenizer, GenerationConfig(
        max_thoughts=n_steps + 2, max_thought_tokens=config.thought_tokens,
        answer="fence" if config.family == "code" else "boxed"))
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    greedy = engine.greedy(prompts)
    gen = torch.Generator().manual_seed(config.seed)
    sampled = [g[0] for g in engine.generate(prompts, 1, gen)]
    writer = make_writer(config)
    loc_prompts, first_errors = [], []
    for p in problems[:64]:
        for _ in range(50):
            thoughts = writer.solution(p, rng, config.localization_extra_error)
            fe = task.first_error(p, thoughts)
            if fe is not None:
                break
        if fe is None:
            continue
        loc_prompts.append(encode_localization_prompt(tokenizer, task.prompt(p), thoughts))
        first_errors.append(fe)
    replies = engine.complete(loc_prompts, max_new_tokens=8) if loc_prompts else []
    from srpo.localize import parse_localization

    hits = [
        parse_localization(tokenizer.decode(r, skip_special_tokens=True), n_steps).k == fe
        for r, fe in zip(replies, first_errors)
    ]

    def pass_rate(chains):
        many = getattr(task, "score_many", None)
        if many is not None:  # the coding task: all tests pass, in the sandbox
            return float(np.mean([ok for _r, ok in many(problems, [c.text for c in chains])]))
        return float(np.mean([task.grade(p, c.text) for p, c in zip(problems, chains)]))

    return {
        "greedy_pass_rate": pass_rate(greedy),
        "sampled_pass_rate": pass_rate(sampled),
        "localization_accuracy": float(np.mean(hits)) if hits else float("nan"),
    }


def warm_start_path(config: WarmStartConfig | None = None,
                    cache_dir: str | Path | None = None) -> Path:
    """Where ``warm_start`` keeps (or will keep) the model of ``config``."""
    config = config or WarmStartConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "warmstart" / config.key


def is_cached(config: WarmStartConfig | None = None, cache_dir: str | Path | None = None) -> bool:
    """Whether the warm-started model of ``config`` is in the cache."""
    return (warm_start_path(config, cache_dir) / "warmstart.json").is_file()


def warm_start(config: WarmStartConfig | None = None, cache_dir: str | Path | None = None,
               force: bool = False, verbose: bool = False, progress=None) -> Path:
    """Train (or load from the cache) the warm-started tiny policy.

    Args:
        config: settings (default ``WarmStartConfig()``).
        cache_dir: root of the cache (default ``default_cache_dir()``); the model lands in
            ``cache_dir / "warmstart" / config.key``.
        force: retrain even if the cache holds the model.
        verbose: print progress.
        progress: called as ``progress(phase, done, total)`` while training: phase ``"train"``
            (optimizer steps), then ``"evaluate"`` (0 of 1, then 1 of 1) and ``"save"``.

    Returns:
        The model directory, loadable with ``srpo.model.load_model``; it also holds
        ``warmstart.json`` (the configuration, training time and held-out evaluation).
    """
    config = config or WarmStartConfig()
    out = warm_start_path(config, cache_dir)
    if (out / "warmstart.json").is_file() and not force:
        return out
    report = progress if progress is not None else (lambda phase, done, total: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        t0 = time.time()
        if config.init is not None:  # continue a previous stage (trained or loaded first)
            prev = warm_start(WarmStartConfig(**config.init), cache_dir=cache_dir, verbose=verbose)
            model, tokenizer = load_model(prev)
            model.train()
        else:
            tokenizer = build_tokenizer()
            model = build_tiny_model(tokenizer, n_layer=config.n_layer,
                                     d_model=config.d_model, n_head=config.n_head,
                                     seed=config.seed)
        task = config.task()
        writer = make_writer(config)
        rng = np.random.default_rng([config.seed, 31337])
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
        warm = max(1, config.steps // 20)

        def lr_at(step):
            if step < warm:
                return (step + 1) / warm
            frac = (step - warm) / max(1, config.steps - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for step in range(config.steps):
                pairs = _examples(config, task, writer, tokenizer, rng, config.batch_size)
                opt.zero_grad(set_to_none=True)
                # solutions (~50 tokens) and localization prompts (~250) are padded separately
                solutions = [x for x in pairs if len(x[1]) > 8]
                localizations = [x for x in pairs if len(x[1]) <= 8]
                loss = 0.0
                for part in (solutions, localizations):
                    if part:
                        part_loss = _batch_loss(model, part, tokenizer.pad_token_id)
                        (part_loss * len(part) / len(pairs)).backward()
                        loss += float(part_loss.detach()) * len(part) / len(pairs)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                report("train", step + 1, config.steps)
                if verbose and (step % 100 == 0 or step == config.steps - 1):
                    print(f"warm start step {step}: loss {loss:.4f}", flush=True)
        model.eval()
        train_seconds = time.time() - t0
        report("evaluate", 0, 1)
        evaluation = _evaluate(model, tokenizer, config)
        if hasattr(task, "close"):  # the coding task's sandbox pool
            task.close()
        report("evaluate", 1, 1)
        report("save", 0, 1)
        tmp = out.with_name(out.name + ".tmp")
        save_model(model, tokenizer, tmp)
        info = {"config": dataclasses.asdict(config), "key": config.key,
                "train_seconds": train_seconds, "eval": evaluation,
                "recipe_version": RECIPE_VERSION}
        (tmp / "warmstart.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        tmp.rename(out)
        report("save", 1, 1)
        if verbose:
            print(f"warm start done in {train_seconds:.0f}s: {evaluation}", flush=True)
        return out
    finally:
        torch.set_num_threads(threads)


def load_warm_start(path: str | Path, device: str = "cpu"):
    """``(model, tokenizer, info)`` of a warm-start directory."""
    model, tokenizer = load_model(path, device=device)
    info = json.loads((Path(path) / "warmstart.json").read_text())
    return model, tokenizer, info
