"""SRPO on language models: rollouts, resets, localization and prefix-masked policy gradients.

Public API (see the modules for the rest): ``srpo.group_advantages``, ``srpo.masked_pg_loss``.
"""

from srpo.advantages import group_advantages
from srpo.loss import masked_pg_loss

__all__ = ["group_advantages", "masked_pg_loss"]
