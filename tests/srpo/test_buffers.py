"""Batch layouts (grpo / 1x4 / 2x4 / 1x8 / no-mask) and the compute accounting."""

import numpy as np
import pytest
import torch

from srpo.buffers import build_batch, split_spec
from srpo.localize import RandomLocalizer, SelfLocalizer
from srpo.model import build_tiny_model
from srpo.rollout import GenerationConfig, RolloutEngine
from srpo.tasks import ModularArithmeticTask
from srpo.tokenizer import build_tokenizer


class RecordingEngine:
    """Delegates to a RolloutEngine and records every generated token."""

    def __init__(self, engine):
        self.engine = engine
        self.tokens = 0

    def generate(self, prompts, n_per_prompt=1, generator=None, temperature=None):
        out = self.engine.generate(prompts, n_per_prompt, generator, temperature)
        self.tokens += sum(c.n_generated for g in out for c in g)
        return out

    def sample_suffixes(self, prompt_ids, prefix_ids, k, generator, temperature=None):
        out = self.engine.sample_suffixes(prompt_ids, prefix_ids, k, generator, temperature)
        self.tokens += sum(c.n_generated for c in out)
        return out

    def sample_suffix_groups(self, groups, generator, temperature=None):
        out = self.engine.sample_suffix_groups(groups, generator, temperature)
        self.tokens += sum(c.n_generated for g in out for c in g)
        return out

    def complete(self, prompt_ids_batch, **kw):
        out = self.engine.complete(prompt_ids_batch, **kw)
        self.tokens += sum(len(r) for r in out)
        return out


class ScriptedTask(ModularArithmeticTask):
    """Grades fresh chains by a script (then 0 for suffixes), to pin the sequential rule."""

    def __init__(self, script, **kw):
        super().__init__(**kw)
        self.script = list(script)

    def grade(self, problem, response_text):
        return float(self.script.pop(0)) if self.script else 0.0


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = build_tiny_model(tok, n_layer=1, d_model=32, n_head=2, seed=1)
    engine = RolloutEngine(model, tok, GenerationConfig(max_thoughts=4, max_thought_tokens=6))
    return tok, engine


def _run(setup, split, script=None, n_prompts=1, localizer="random", mask_prefix=True):
    tok, engine = setup
    task = ScriptedTask(script, n_steps=3) if script is not None else ModularArithmeticTask(3)
    rec = RecordingEngine(engine)
    loc = RandomLocalizer() if localizer == "random" else SelfLocalizer(rec, tok)
    problems = task.sample(n_prompts, np.random.default_rng(0))
    batch = build_batch(problems, task, rec, tok, split, None if split == "grpo" else loc,
                        np.random.default_rng(1), torch.Generator().manual_seed(2),
                        mask_prefix=mask_prefix)
    assert batch.accounting.generated_tokens == rec.tokens  # every generated token counted
    return batch


def _groups(batch):
    out = {}
    for s in batch.samples:
        out.setdefault(s.group_id, []).append(s)
    return out


def test_split_specs():
    assert split_spec("1x4") == split_spec("1x4", 8)
    assert (split_spec("2x4").n_base, split_spec("1x8").suffixes_per_parent) == (0, 8)
    with pytest.raises(ValueError, match="split must be one of"):
        split_spec("3x3")
    with pytest.raises(ValueError, match="too small"):
        split_spec("2x4", 6)


def test_grpo_layout(setup):
    b = _run(setup, "grpo", n_prompts=3)
    assert len(b.samples) == 24 and not b.events
    groups = _groups(b)
    assert sorted(len(g) for g in groups.values()) == [8, 8, 8]
    for s in b.samples:
        assert s.loss_mask == [1] * len(s.response_ids) and not s.is_reset_group
    acc = b.accounting
    assert acc.tokens_base == acc.generated_tokens and acc.chains_fresh == 24
    assert len(b.first_round_rewards) == 24


def test_1x4_sequential_rule_and_prefix_mask(setup):
    # five successes then a failure: base = chains 1-4, chain 5 discarded, chain 6 the parent
    b = _run(setup, "1x4", script=[1, 1, 1, 1, 1, 0])
    acc = b.accounting
    assert (acc.chains_fresh, acc.chains_discarded, acc.chains_suffix) == (6, 1, 4)
    assert len(b.samples) == 8 and len(b.events) == 1 and b.prompts_reset == 1
    groups = _groups(b)
    base = [s for s in b.samples if not s.is_reset_group]
    reset = [s for s in b.samples if s.is_reset_group]
    assert len(groups) == 2 and len(base) == 4 and len(reset) == 4
    assert all(s.reward == 1.0 for s in base)
    ev = b.events[0]
    assert 1 <= ev.k <= ev.n and ev.suffix_rewards == [0.0] * 4
    for s in reset:
        assert s.loss_mask[: s.prefix_len] == [0] * s.prefix_len
        assert s.loss_mask[s.prefix_len :] == [1] * (len(s.response_ids) - s.prefix_len)
        assert s.prefix_len == ev.prefix_tokens
    assert acc.tokens_base + acc.tokens_parent + acc.tokens_discarded + acc.tokens_suffix == (
        acc.generated_tokens
    )
    assert len(b.first_round_rewards) == 5  # 4 base + 1 candidate parent, before any outcome


def test_1x4_without_failure_is_one_grpo_group(setup):
    b = _run(setup, "1x4", script=[1] * 12)
    assert len(b.samples) == 8 and not b.events and len(_groups(b)) == 1
    assert (b.accounting.chains_fresh, b.accounting.chains_discarded) == (12, 4)


def test_2x4_layout(setup):
    b = _run(setup, "2x4", script=[0, 1, 0])
    assert len(b.events) == 2 and len(b.samples) == 8
    assert all(s.is_reset_group for s in b.samples)
    assert sorted(len(g) for g in _groups(b).values()) == [4, 4]
    assert (b.accounting.chains_fresh, b.accounting.chains_discarded) == (3, 1)


def test_2x4_with_one_failure_falls_back_to_1x4(setup):
    b = _run(setup, "2x4", script=[0] + [1] * 11)
    assert len(b.events) == 1 and len(b.samples) == 8
    assert sum(not s.is_reset_group for s in b.samples) == 4


def test_1x8_layout(setup):
    b = _run(setup, "1x8", script=[1, 0])
    assert len(b.events) == 1 and len(b.samples) == 8 and len(_groups(b)) == 1
    assert all(s.is_reset_group for s in b.samples)
    assert b.accounting.chains_discarded == 1


def test_no_mask_ablation_trains_on_prefix(setup):
    b = _run(setup, "1x8", script=[0], mask_prefix=False)
    assert all(s.loss_mask == [1] * len(s.response_ids) for s in b.samples)


def test_multi_prompt_self_localization_accounting(setup):
    b = _run(setup, "1x4", n_prompts=3, localizer="self")  # random model: every chain fails
    assert len(b.events) == 3 and len(b.samples) == 24
    acc = b.accounting
    assert acc.localization_calls == 3 and acc.tokens_localization > 0
    assert acc.tokens_localization == sum(r.n_generated for r in b.localizations)
    assert len(_groups(b)) == 6


def test_reset_prefix_is_cut_from_the_parent_and_suffixes_graded_on_the_full_response(setup):
    """With multi-thought parents: prefix = the parent's thoughts 1..k-1 (ids), loss mask on the
    sampled part only, the suffix graded on prefix + suffix, the parent itself not trained on."""
    from srpo.rollout import Chain
    from srpo.thoughts import thought_spans
    from srpo.tokenizer import delimiter_ids

    tok, _ = setup
    delim = delimiter_ids(tok)
    step = tok.encode("1+1=2", add_special_tokens=False) + delim

    def chain(prompt, prefix, n_new):
        ids = list(prefix) + step * n_new
        return Chain(list(prompt), ids, len(prefix), thought_spans(ids, delim), tok.decode(ids),
                     len(ids) - len(prefix), False, True)

    class FakeEngine:
        def generate(self, prompts, n_per_prompt=1, generator=None, temperature=None):
            return [[chain(p, [], 3) for _ in range(n_per_prompt)] for p in prompts]

        def sample_suffix_groups(self, groups, generator, temperature=None):
            return [[chain(prompt_ids, prefix_ids, 1 + i) for i in range(k)]
                    for prompt_ids, prefix_ids, _spans, k in groups]

    graded = []

    class Task(ModularArithmeticTask):
        def grade(self, problem, text):
            graded.append(text)
            return 0.0

    class FixedK(RandomLocalizer):
        def _locate(self, parents, rng, **kw):
            from srpo.localize import LocalizationResult
            return [LocalizationResult(3, "random") for _ in parents]

    task = Task(3)
    b = build_batch(task.sample(1, np.random.default_rng(0)), task, FakeEngine(), tok, "1x8",
                    FixedK(), np.random.default_rng(1), torch.Generator().manual_seed(2))
    (ev,) = b.events
    assert (ev.n, ev.k, ev.prefix_tokens) == (3, 3, 2 * len(step))
    assert len(b.samples) == 8 and all(s.is_reset_group for s in b.samples)  # parent not trained
    for i, s in enumerate(b.samples):
        assert s.response_ids[: s.prefix_len] == step * 2 and s.prefix_len == 2 * len(step)
        assert s.loss_mask == [0] * s.prefix_len + [1] * (1 + i) * len(step)
        assert tok.decode(s.response_ids) in graded[1:]
    assert b.accounting.tokens_suffix == sum(1 + i for i in range(8)) * len(step)
    assert b.accounting.tokens_parent == 3 * len(step)
