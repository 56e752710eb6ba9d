"""Test cases of a coding problem and how the grader judges one sandboxed run of a test.

A ``TestCase`` is one of four kinds:

- ``stdio``: the program reads ``input`` on stdin; its stdout must equal ``expected`` under
  LiveCodeBench's rule (both stripped, split into lines, each line stripped; the same number of
  lines; each pair of lines equal, or equal as sequences of decimal numbers).
- ``call``: a functional test: ``func_name`` is called with the arguments in ``input`` (one JSON
  value per line, LiveCodeBench's encoding; the method of a class ``Solution`` if there is one)
  and the return value must equal the JSON value ``expected`` (a returned tuple counts as a list,
  as in LiveCodeBench).
- ``expr``: an assert split in two: ``left op right`` where each side is either a Python literal
  (``left_literal`` / ``right_literal``: read by the grader, never sent to the program) or an
  expression evaluated in the sandbox. ``op`` is a comparison (``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=``, ``is``, ``is not``, ``in``, ``not in``) or ``truth`` / ``not`` for
  ``assert E`` / ``assert not E`` (``right`` unused).
- ``exec``: statements run in the sandbox after the solution (asserts of other shapes, loops):
  the in-process fallback, see docs/code.md for what it cannot rule out.

The program never sees an expected value: for ``stdio`` and ``call`` it is kept in the grader,
for ``expr`` only the non-literal sides travel. The sandbox returns printed values; the grader
parses them with ``parse_value`` (literals only: no code runs in the grader) and compares them
itself, so an object that claims to equal everything, a patched ``operator.eq`` or a printed
"PASS" cannot pass a test.
"""

from __future__ import annotations

import ast
import json
import math
import operator
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "TestCase",
    "KINDS",
    "OPS",
    "parse_value",
    "stdio_equal",
    "call_equal",
    "compare",
    "cases_to_json",
    "cases_from_json",
]

KINDS = ("stdio", "call", "expr", "exec")
OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "is": operator.is_,
    "is not": operator.is_not,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
    "truth": lambda a, _b: bool(a),
    "not": lambda a, _b: not a,
}


@dataclass(frozen=True)
class TestCase:
    """One test (see the module docstring for the kinds).

    Attributes:
        kind: ``stdio`` | ``call`` | ``expr`` | ``exec``.
        input: stdio: the stdin text; call: the arguments, one JSON value per line.
        expected: stdio: the expected stdout; call: the expected return value as JSON.
        func_name: call: the function (or ``Solution`` method) to call.
        left, right: expr: the two sides as Python source.
        left_literal, right_literal: expr: whether that side is a literal the grader reads
            itself (a non-literal side is evaluated in the sandbox).
        op: expr: the comparison (``OPS``).
        code: exec: the statements.
        setup: expr/exec: test-side statements run in the sandbox after the solution and
            before the test (imports of the test file, ``candidate = entry_point``).
    """

    __test__ = False  # not a pytest test class

    kind: str
    input: str = ""
    expected: str = ""
    func_name: str = ""
    left: str = ""
    right: str = ""
    left_literal: bool = False
    right_literal: bool = False
    op: str = "=="
    code: str = ""
    setup: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TestCase.kind must be one of {KINDS}; got {self.kind!r}")
        if self.kind == "call" and not self.func_name:
            raise ValueError("TestCase.func_name is required for a call test")
        if self.kind == "expr":
            if self.op not in OPS:
                raise ValueError(f"TestCase.op must be one of {tuple(OPS)}; got {self.op!r}")
            if self.left_literal and (self.right_literal or self.op in ("truth", "not")):
                raise ValueError("an expr test needs a side evaluated in the sandbox")
        if self.kind == "exec" and not self.code.strip():
            raise ValueError("TestCase.code is required for an exec test")

    @property
    def sandbox_exprs(self) -> list[str]:
        """expr: the expressions the sandbox evaluates (the non-literal sides, left first)."""
        sides = [(self.left, self.left_literal)]
        if self.op not in ("truth", "not"):
            sides.append((self.right, self.right_literal))
        return [text for text, literal in sides if not literal]


def cases_to_json(tests) -> str:
    """A canonical JSON text of tests (sorted keys): storage and the split's hash key."""
    return json.dumps([asdict(t) for t in tests], sort_keys=True, separators=(",", ":"))


def cases_from_json(text: str) -> tuple[TestCase, ...]:
    return tuple(TestCase(**record) for record in json.loads(text))


# ---------------------------------------------------------------------------------------------
# Values the sandbox prints, read without running code
# ---------------------------------------------------------------------------------------------

_NAMES = {"True": True, "False": False, "None": None, "inf": math.inf, "nan": math.nan}


def _literal(node: ast.AST):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("dict unpacking is not a literal")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
            raise ValueError("a sign applies to numbers only")
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = _literal(node.left), _literal(node.right)
        if (
            isinstance(right, complex)
            and isinstance(left, (int, float))
            and not isinstance(left, bool)
        ):
            return left + right if isinstance(node.op, ast.Add) else left - right
        raise ValueError("only real +/- imaginary literals may be added")
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and not node.keywords
        and node.func.id in ("set", "frozenset", "float")
        and len(node.args) <= 1
    ):
        if node.func.id == "float":
            if (
                len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).lower() in ("inf", "-inf", "nan", "infinity")
            ):
                return float(node.args[0].value)
            raise ValueError("float() of something else than inf/nan")
        items = _literal(node.args[0]) if node.args else ()
        return set(items) if node.func.id == "set" else frozenset(items)
    raise ValueError(f"not a literal: {type(node).__name__}")


def parse_value(text: str):
    """The Python value of a literal printed by ``repr`` (numbers, strings, bytes, None, bools,
    lists, tuples, sets, frozensets, dicts, complex, inf, nan); no code is executed.

    Raises:
        ValueError: not such a literal (an object without a literal repr, e.g. one that claims to
            equal everything), or too deeply nested.
    """
    try:
        return _literal(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, RecursionError, MemoryError, TypeError) as error:
        raise ValueError(f"not a literal ({type(error).__name__})") from None


def is_literal(node: ast.AST) -> bool:
    """Whether an expression node (of trusted test code) is a literal ``parse_value`` reads."""
    try:
        _literal(node)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Comparisons (in the grader)
# ---------------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdio_equal(output: str, expected: str) -> bool:
    """LiveCodeBench's stdout rule: stripped lines equal in number, each pair equal as text or
    as sequences of decimal numbers (so ``0.50`` matches ``0.5``, not ``0.5000001``)."""
    got, want = _lines(output), _lines(expected)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a == b:
            continue
        da, db = _decimals(a), _decimals(b)
        if da is None or db is None or da != db:
            return False
    return True


def call_equal(value, expected_json: str) -> bool:
    """LiveCodeBench's functional rule: a returned tuple counts as a list, then ``==`` with
    the expected JSON value."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return bool(value == json.loads(expected_json))
    except (ValueError, TypeError, RecursionError):
        return False


def compare(test: TestCase, values: list) -> bool:
    """expr: ``left op right`` with the sandbox's values in place of the non-literal sides."""
    values = list(values)
    left = parse_value(test.left) if test.left_literal else values.pop(0)
    if test.op in ("truth", "not"):
        return bool(OPS[test.op](left, None))
    right = parse_value(test.right) if test.right_literal else values.pop(0)
    try:
        return bool(OPS[test.op](left, right))
    except (TypeError, ValueError, RecursionError):
        return False
