"""The ladder of issue 19: CPI, SRPO on a tabular policy, SRPO on the language model (docs/ladder.md)."""
