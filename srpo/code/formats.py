"""Test formats of the ecosystem, read into ``CodeProblem``s (both splits applied).

- LiveCodeBench ``code_generation_lite`` rows (``lcb_problem``): ``question_content``,
  ``starter_code``, ``public_test_cases`` (JSON), ``private_test_cases`` (JSON, or base64 of
  zlib of a pickled JSON string), ``metadata`` (JSON with ``func_name`` for functional tests),
  ``question_id``, ``difficulty``. Each test record is ``{"input", "output", "testtype"}`` with
  testtype ``stdin`` or ``functional``. The private tests are decoded WITHOUT unpickling:
  ``decode_lcb_cases`` walks the pickle's opcodes (``pickletools.genops``, a parser) and accepts
  only a protocol header, framing, memo bookkeeping and exactly one string.
- MBPP rows (``mbpp_problem``): ``text``/``prompt``, ``test_list``, ``test_setup_code``.
- HumanEval rows (``humaneval_problem``): ``prompt``, ``test`` (``def check(candidate)``),
  ``entry_point``.
- The release's parquet layout (``release_problem``): ``prompt`` as a chat message list,
  ``data_source``, ``reward_model.ground_truth`` holding the tests as a string (``ground_truth_tests``:
  APPS/verl-style JSON ``{"inputs", "outputs", "fn_name"}``, a JSON list of LiveCodeBench test
  records, or Python assert source).

``read_code_problems(path)`` reads a JSONL or parquet file of any of these, row by row.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import pickletools
import zlib
from pathlib import Path

from srpo.code.asserts import assert_tests, check_function_tests
from srpo.code.cases import TestCase
from srpo.code.problem import (
    DEFAULT_SPLIT_SEED,
    HELDOUT_PROBLEM_FRACTION,
    CodeProblem,
    make_problem,
)

__all__ = [
    "LCB_PRELUDE",
    "decode_lcb_cases",
    "lcb_cases",
    "lcb_problem",
    "mbpp_problem",
    "humaneval_problem",
    "release_problem",
    "ground_truth_tests",
    "read_code_problems",
    "MAX_DECODED_BYTES",
    "question_text",
    "release_row",
]

#: the modules LiveCodeBench's harness imports before a solution (plain and star imports), so
#: a solution may use e.g. ``List`` or ``deque`` without importing them; builtins come back last
_PRELUDE_MODULES = (
    "string",
    "re",
    "datetime",
    "collections",
    "heapq",
    "bisect",
    "copy",
    "math",
    "random",
    "statistics",
    "itertools",
    "functools",
    "operator",
    "io",
    "sys",
    "json",
)
LCB_PRELUDE = "\n".join(
    [f"import {m}" for m in _PRELUDE_MODULES]
    + [f"from {m} import *" for m in _PRELUDE_MODULES]
    + ["from builtins import *", "from typing import *", "sys.setrecursionlimit(50000)"]
)
#: the largest decompressed private-test payload accepted (a bound against zlib bombs)
MAX_DECODED_BYTES = 512 * 1024**2
_PICKLE_SAFE = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}
_PICKLE_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}


def _pickled_string(data: bytes) -> str:
    """The one string of a pickle, found by parsing its opcodes (nothing is executed)."""
    strings = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in _PICKLE_STRINGS:
                strings.append(arg)
            elif opcode.name not in _PICKLE_SAFE:
                raise ValueError(f"the pickle holds opcode {opcode.name}, not just a string")
    except (ValueError, EOFError) as error:
        raise ValueError(f"private_test_cases: not a pickled string ({error})") from None
    if len(strings) != 1:
        raise ValueError(f"private_test_cases: the pickle holds {len(strings)} strings, not one")
    return strings[0]


def decode_lcb_cases(text: str, max_bytes: int = MAX_DECODED_BYTES) -> list[dict]:
    """LiveCodeBench test records from a JSON string or from base64(zlib(pickle(JSON string))).

    Raises:
        ValueError: neither form, a pickle that holds anything but one string, or more than
            ``max_bytes`` after decompression.
    """
    text = text.strip()
    if text.startswith("["):
        records = json.loads(text)
    else:
        try:
            packed = base64.b64decode(text, validate=True)
            inflater = zlib.decompressobj()
            raw = inflater.decompress(packed, max_bytes)
        except (binascii.Error, zlib.error, ValueError) as error:
            raise ValueError(
                f"private_test_cases: neither JSON nor base64 zlib data ({error})"
            ) from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError(
                f"private_test_cases: more than {max_bytes} bytes decompressed, or truncated"
            )
        records = json.loads(_pickled_string(raw))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("test cases must be a JSON list of objects")
    return records


def _record_test(record: dict, func_name: str) -> TestCase:
    try:
        kind, given, wanted = record["testtype"], record["input"], record["output"]
    except KeyError as error:
        raise ValueError(
            f"a test record lacks the field {error.args[0]!r} (expected input, output, testtype)"
        ) from None
    if kind == "stdin":
        return TestCase("stdio", input=str(given), expected=str(wanted))
    if kind == "functional":
        if not func_name:
            raise ValueError("a functional test needs metadata.func_name")
        for line in str(given).split("\n"):
            if line.strip():
                json.loads(line)  # a bad argument line is a bad row, not a failed program
        json.loads(wanted)
        return TestCase("call", input=str(given), expected=str(wanted), func_name=func_name)
    raise ValueError(f"testtype must be 'stdin' or 'functional'; got {kind!r}")


def lcb_cases(records: list[dict], func_name: str = "") -> tuple[TestCase, ...]:
    """Tests from LiveCodeBench test records."""
    return tuple(_record_test(r, func_name) for r in records)


def _json_field(row: dict, name: str, default):
    value = row.get(name, default)
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else default
    return value


def lcb_problem(
    row: dict, seed: int = DEFAULT_SPLIT_SEED, heldout_fraction: float = HELDOUT_PROBLEM_FRACTION
) -> CodeProblem:
    """A LiveCodeBench ``code_generation_lite`` row (fields in the module docstring)."""
    metadata = _json_field(row, "metadata", {}) or {}
    func_name = str(metadata.get("func_name") or "")
    public = _json_field(row, "public_test_cases", [])
    private = row.get("private_test_cases", "")
    private = decode_lcb_cases(private) if isinstance(private, str) else list(private)
    tests = lcb_cases(private, func_name)
    return make_problem(
        str(row.get("question_id", "")),
        str(row.get("question_content", "")),
        tests,
        seed=seed,
        heldout_fraction=heldout_fraction,
        starter_code=str(row.get("starter_code") or ""),
        func_name=func_name,
        style="call" if func_name else "stdio",
        public_tests=lcb_cases(public, func_name),
        prelude=LCB_PRELUDE,
        data_source="livecodebench",
        difficulty=str(row.get("difficulty", "")),
    )


def _call_name(tests) -> str:
    """The function called by the first expr test (MBPP names its function only there)."""
    for test in tests:
        for side, literal in ((test.left, test.left_literal), (test.right, test.right_literal)):
            if test.kind != "expr" or literal:
                continue
            for node in ast.walk(ast.parse(side, mode="eval")):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    return node.func.id
    return ""


def mbpp_problem(
    row: dict, seed: int = DEFAULT_SPLIT_SEED, heldout_fraction: float = HELDOUT_PROBLEM_FRACTION
) -> CodeProblem:
    """An MBPP row: ``text`` (or ``prompt``), ``test_list``, optional ``test_setup_code``."""
    tests = assert_tests("\n".join(row["test_list"]), setup=str(row.get("test_setup_code") or ""))
    return make_problem(
        str(row.get("task_id", "")),
        str(row.get("text") or row.get("prompt")),
        tests,
        seed=seed,
        heldout_fraction=heldout_fraction,
        func_name=_call_name(tests),
        style="assert",
        data_source="mbpp",
    )


def _imports_of(source: str) -> str:
    try:
        module = ast.parse(source)
    except SyntaxError:
        return ""
    return "\n".join(
        ast.unparse(s) for s in module.body if isinstance(s, (ast.Import, ast.ImportFrom))
    )


def humaneval_problem(
    row: dict, seed: int = DEFAULT_SPLIT_SEED, heldout_fraction: float = HELDOUT_PROBLEM_FRACTION
) -> CodeProblem:
    """A HumanEval row: ``prompt`` (signature and docstring), ``test``, ``entry_point``. The
    prompt's imports become the prelude (the model writes the whole function)."""
    entry = str(row["entry_point"])
    tests = check_function_tests(str(row["test"]), entry)
    return make_problem(
        str(row.get("task_id", "")),
        str(row["prompt"]),
        tests,
        seed=seed,
        heldout_fraction=heldout_fraction,
        starter_code=str(row["prompt"]),
        func_name=entry,
        style="assert",
        prelude=_imports_of(str(row["prompt"])),
        data_source="humaneval",
    )


def _apps_tests(value: dict, func_name: str) -> tuple[TestCase, ...]:
    inputs, outputs = list(value["inputs"]), list(value["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError(f"ground_truth has {len(inputs)} inputs but {len(outputs)} outputs")
    name = str(value.get("fn_name") or func_name or "")
    tests = []
    for given, wanted in zip(inputs, outputs):
        if name:  # LiveCodeBench's strings (JSON lines / JSON) or APPS's lists of values
            given = given if isinstance(given, str) else "\n".join(json.dumps(a) for a in given)
            wanted = wanted if isinstance(wanted, str) else json.dumps(wanted)
            tests.append(
                _record_test({"input": given, "output": wanted, "testtype": "functional"}, name)
            )
        else:
            wanted = "\n".join(wanted) if isinstance(wanted, list) else wanted
            given = "\n".join(given) if isinstance(given, list) else given
            tests.append(TestCase("stdio", input=str(given), expected=str(wanted)))
    return tuple(tests)


def ground_truth_tests(value, func_name: str = "") -> tuple[tuple[TestCase, ...], str]:
    """``(tests, style)`` from a ``reward_model.ground_truth`` value (see the module docstring).

    Raises:
        ValueError: none of the accepted forms.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:  # a dict written with str() (Python literal), read without running code
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                if "def check(" in text:
                    return check_function_tests(text, func_name), "assert"
                return assert_tests(text), "assert"
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        tests = _apps_tests(value, func_name)
        return tests, "call" if tests and tests[0].kind == "call" else "stdio"
    if isinstance(value, dict) and "test" in value and "entry_point" in value:
        return check_function_tests(str(value["test"]), str(value["entry_point"])), "assert"
    if isinstance(value, dict) and "test_list" in value:
        return assert_tests(
            "\n".join(value["test_list"]), setup=str(value.get("test_setup_code") or "")
        ), "assert"
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        tests = lcb_cases(value, func_name)
        return tests, "call" if tests[0].kind == "call" else "stdio"
    raise ValueError(
        "reward_model.ground_truth holds no tests: expected JSON with inputs/outputs "
        "(and fn_name), a list of {input, output, testtype}, or assert source"
    )


def _question(prompt) -> str:
    """The last user message of a chat list (or the text itself)."""
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        if not users:
            raise ValueError("prompt holds no user message")
        return str(users[-1].get("content", ""))
    return str(prompt)


def release_problem(
    row: dict, seed: int = DEFAULT_SPLIT_SEED, heldout_fraction: float = HELDOUT_PROBLEM_FRACTION
) -> CodeProblem:
    """A row of the release's parquet layout: ``prompt`` (chat list), ``data_source``,
    ``reward_model.ground_truth`` (the tests), optional ``extra_info`` with ``index``,
    ``func_name``, ``starter_code``."""
    reward_model = row.get("reward_model") or {}
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise ValueError("field 'reward_model.ground_truth' is missing (the tests)")
    extra = row.get("extra_info") or {}
    extra = extra if isinstance(extra, dict) else {}
    func_name = str(extra.get("func_name") or "")
    tests, style = ground_truth_tests(reward_model["ground_truth"], func_name)
    func_name = func_name or next((t.func_name for t in tests if t.func_name), "")
    source = str(row.get("data_source") or "")
    return make_problem(
        str(extra.get("index", row.get("uid", ""))),
        _question(row["prompt"]),
        tests,
        seed=seed,
        heldout_fraction=heldout_fraction,
        starter_code=str(extra.get("starter_code") or ""),
        func_name=func_name,
        style=style,
        prelude=LCB_PRELUDE if style != "assert" else "",
        data_source=source,
    )


def _reader(row: dict):
    if "private_test_cases" in row or "public_test_cases" in row:
        return lcb_problem
    if "reward_model" in row:
        return release_problem
    if "test_list" in row:
        return mbpp_problem
    if "test" in row and "entry_point" in row:
        return humaneval_problem
    return None


def read_code_problems(
    path: str | Path,
    seed: int = DEFAULT_SPLIT_SEED,
    heldout_fraction: float = HELDOUT_PROBLEM_FRACTION,
    limit: int | None = None,
) -> list[CodeProblem]:
    """Coding problems from a ``.jsonl`` / ``.parquet`` file of LiveCodeBench, MBPP, HumanEval
    or release-layout rows (detected per row by their fields).

    Raises:
        ValueError: a row of none of these layouts or with bad tests; the message names the
            file and the row.
    """
    from srpo.data import _plain, _records

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset path {str(path)!r} does not exist or is not a file")
    problems = []
    for index, (_location, where, record) in enumerate(_records(path)):
        record = _plain(record)
        reader = _reader(record) if isinstance(record, dict) else None
        if reader is None:
            raise ValueError(
                f"{path}: {where}: not a coding row (expected LiveCodeBench's "
                "private_test_cases, MBPP's test_list, HumanEval's test and "
                "entry_point, or reward_model.ground_truth)"
            )
        try:
            problem = reader(record, seed=seed, heldout_fraction=heldout_fraction)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: {where}: {error}") from None
        if not problem.uid:
            problem = _with_uid(problem, f"{path.stem}:{index}")
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path}: no rows found")
    return problems


def _with_uid(problem: CodeProblem, uid: str) -> CodeProblem:
    from dataclasses import replace

    return replace(problem, uid=uid)


def question_text(problem: CodeProblem) -> str:
    """The statement with LiveCodeBench-style instructions: complete the starter code (a
    functional problem) or read stdin and write stdout, answer in one ```python block."""
    if problem.starter_code:
        how = (
            f"Complete this starter code:\n```python\n{problem.starter_code.rstrip()}\n```\n"
            "Give the whole solution"
        )
    else:
        how = "Read the input from stdin and write the answer to stdout. Give the whole program"
    return f"{problem.question.rstrip()}\n\n{how} in one ```python code block."


def release_row(problem: CodeProblem, question: str | None = None) -> dict:
    """A row of the release's parquet layout for a stdin/stdout or functional problem: the
    prompt as a chat list, ``data_source``, ALL graded tests as JSON under
    ``reward_model.ground_truth`` (inputs/outputs in LiveCodeBench's encoding, ``fn_name``; the
    splits are redone when the row is read), ``extra_info`` with the id and starter code.

    Raises:
        ValueError: an assert-style problem (its tests are Python source, not inputs/outputs).
    """
    if any(t.kind not in ("stdio", "call") for t in problem.tests):
        raise ValueError(
            f"problem {problem.uid!r}: only stdin/stdout and functional tests fit "
            "the inputs/outputs layout"
        )
    truth = {
        "inputs": [t.input for t in problem.tests],
        "outputs": [t.expected for t in problem.tests],
    }
    if problem.func_name:
        truth["fn_name"] = problem.func_name
    text = question if question is not None else question_text(problem)
    return {
        "prompt": [{"role": "user", "content": text}],
        "data_source": problem.data_source or "code",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
        "extra_info": {
            "index": problem.uid,
            "func_name": problem.func_name,
            "starter_code": problem.starter_code,
            "difficulty": problem.difficulty,
        },
    }
