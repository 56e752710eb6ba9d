"""SRPO on language models: rollouts, resets, localization and prefix-masked policy gradients.

Public API (see the modules for the rest): ``srpo.group_advantages``, ``srpo.masked_pg_loss``.
The package needs torch, transformers, tokenizers, peft and math-verify: the ``llm`` extra
(``pip install "credit-resets[llm]"``). ``cpi`` and the theory sweep do not.
"""

import importlib.util as _importlib_util
import sys as _sys


def _missing(name: str) -> bool:
    try:
        return _importlib_util.find_spec(name) is None
    except (ImportError, ValueError):  # a blocked or half-removed module
        return True


#: the install line README.md gives (tests/srpo/test_llm_cli.py checks that they agree)
INSTALL_HINT = ('pip install -e ".[llm]" from the repository root (the CPU build of torch: add '
                "--extra-index-url https://download.pytorch.org/whl/cpu)")


class MissingExtraError(ModuleNotFoundError):
    """The LLM extra is not installed (still a ModuleNotFoundError for callers that catch it)."""


def _one_line_hook(previous):
    """An excepthook that prints a MissingExtraError as one line, without a traceback: the
    traceback would only show this file; any other exception goes to ``previous``."""

    def hook(kind, value, tb):
        if isinstance(value, MissingExtraError):
            print(f"ModuleNotFoundError: {value}", file=_sys.stderr)
        else:
            previous(kind, value, tb)

    return hook


_MISSING = [name for name in ("torch", "transformers", "tokenizers") if _missing(name)]
if _MISSING:
    _sys.excepthook = _one_line_hook(_sys.excepthook)
    raise MissingExtraError(
        f"srpo needs {', '.join(_MISSING)}, which {'is' if len(_MISSING) == 1 else 'are'} not "
        f"installed: install the LLM extra with {INSTALL_HINT}",
        name=_MISSING[0],
    ) from None

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
