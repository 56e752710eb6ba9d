"""Branch rules as selectors (``experiments/branch_rules.py``): the simulation side (``sim``) and
the language model (``lm``)."""
