"""Backwards-compatible import path of the generation seam and the Hugging Face engine.

The seam lives in ``srpo.engines.base`` (``ThoughtEngine``, ``GenerationConfig``, ``Chain``,
``RolloutRequest``), the Hugging Face engine in ``srpo.engines.hf`` (``RolloutEngine``) and the
vLLM engine in ``srpo.engines.vllm``; ``srpo.engines.make_engine`` builds either by name.
"""

from srpo.engines.base import (  # noqa: F401
    STOP_REASONS,
    Chain,
    GenerationConfig,
    RolloutRequest,
    ThoughtEngine,
    _Row,
    draw_seeds,
    mix_seed,
)
from srpo.engines.hf import (  # noqa: F401
    HFEngine,
    RolloutEngine,
    _cache_keyword,
    _output_cache,
    sample_from_logits,
)

__all__ = [
    "GenerationConfig",
    "Chain",
    "RolloutRequest",
    "ThoughtEngine",
    "RolloutEngine",
    "draw_seeds",
    "sample_from_logits",
    "token_logprobs",
]


def token_logprobs(*args, **kwargs):
    """See ``srpo.logprobs.token_logprobs`` (kept here for the import path of earlier code)."""
    from srpo.logprobs import token_logprobs as _token_logprobs

    return _token_logprobs(*args, **kwargs)
