"""SRPO inside other trainers: ``srpo.integrations.trl`` (TRL's GRPOTrainer).

Generation (``srpo.engines``) and the batch logic (``srpo.buffers``: fresh chains, parents,
localization, suffix groups, masks, accounting) are the same objects as in ``srpo.trainer``; an
integration only hands their output to another trainer's loss and optimizer.
"""
