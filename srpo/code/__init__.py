"""Coding tasks: model-written code run in a sandbox, graded by test cases (docs/code.md).

- ``srpo.code.sandbox``: ``Sandbox(SandboxConfig).run(files, entry, stdin) -> RunResult``, the
  isolation layers and which of them this machine gives (``Sandbox().layers``).
- ``srpo.code.grading``: ``extract_code``, ``CodeGrader`` (``rewards`` -> ``[(reward,
  correct)]`` on reward tests, ``evaluate`` -> ``GradeReport`` on held-out tests), verdicts.
- ``srpo.code.cases`` / ``srpo.code.asserts``: test cases (stdin/stdout, functional, asserts)
  and how the grader compares values it never lets the program see.
- ``srpo.code.formats`` / ``srpo.code.convert``: LiveCodeBench, MBPP, HumanEval and the
  release's parquet layout; ``srpo.code.problem``: ``CodeProblem`` and the two splits.
- ``srpo.code.evaluation``: the ``code`` grader of ``srpo.graders`` and llm_eval.py.
- ``srpo.code.synthetic``: a tiny task family (one-line functions from examples).

Nothing is imported here: ``srpo.code.sandbox`` and its launcher use the standard library only.
"""
