"""SRPO on language models: rollouts, resets, localization and prefix-masked policy gradients.

Public API (see the modules for the rest): ``srpo.group_advantages``, ``srpo.masked_pg_loss``.
The package needs torch, transformers, tokenizers, peft and math-verify: the ``llm`` extra
(``pip install "credit-resets[llm]"``). ``cpi`` and the theory sweep do not.
"""

import importlib.util as _importlib_util


def _missing(name: str) -> bool:
    try:
        return _importlib_util.find_spec(name) is None
    except (ImportError, ValueError):  # a blocked or half-removed module
        return True


_MISSING = [name for name in ("torch", "transformers", "tokenizers") if _missing(name)]
if _MISSING:
    raise ModuleNotFoundError(
        f"srpo needs {', '.join(_MISSING)}, which is not installed: install the LLM extra with "
        'pip install "credit-resets[llm]" (for the CPU build of torch add '
        "--extra-index-url https://download.pytorch.org/whl/cpu)",
        name=_MISSING[0],
    )

__all__ = ["group_advantages", "masked_pg_loss"]


def __getattr__(name: str):
    # lazy: ``import srpo.config`` (a command line checking its inputs) must not import torch
    if name == "group_advantages":
        from srpo.advantages import group_advantages

        return group_advantages
    if name == "masked_pg_loss":
        from srpo.loss import masked_pg_loss

        return masked_pg_loss
    raise AttributeError(f"module 'srpo' has no attribute {name!r}")
