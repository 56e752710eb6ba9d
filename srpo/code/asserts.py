"""Python assert tests (MBPP's ``test_list``, HumanEval's ``check(candidate)``) as grader tests.

An assert of the shape ``assert LEFT op RIGHT`` (one comparison) becomes an ``expr`` test: each
side that is a literal is read by the grader, the other side is evaluated in the sandbox and its
printed value compared in the grader. ``assert E`` / ``assert not E`` become ``truth`` / ``not``
tests, ``assert A and B`` two tests. Everything else (chained comparisons, asserts inside loops,
helper code between asserts in a ``check`` body) becomes one ``exec`` test that runs in the
sandbox's process: the in-process fallback, counted by ``in_process_count``.

Statements of the test source that are not asserts (imports, constants) become the ``setup`` of
the asserts that follow them; HumanEval's ``check(candidate)`` gets ``candidate = ENTRY_POINT``
in its setup.
"""

from __future__ import annotations

import ast

from srpo.code.cases import TestCase, is_literal

__all__ = ["assert_tests", "check_function_tests", "in_process_count"]

_CMP = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _split_and(test: ast.expr) -> list[ast.expr]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [part for value in test.values for part in _split_and(value)]
    return [test]


def _expr_test(test: ast.expr, setup: str) -> TestCase | None:
    """The expr test of one assert condition, or None if it has another shape."""
    if isinstance(test, ast.Compare):
        if len(test.ops) != 1 or type(test.ops[0]) not in _CMP:
            return None
        left, right = test.left, test.comparators[0]
        left_literal, right_literal = is_literal(left), is_literal(right)
        if left_literal and right_literal:
            return None  # asserts nothing about the program
        return TestCase(
            "expr",
            left=ast.unparse(left),
            right=ast.unparse(right),
            left_literal=left_literal,
            right_literal=right_literal,
            op=_CMP[type(test.ops[0])],
            setup=setup,
        )
    if is_literal(test):
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        if is_literal(test.operand):
            return None
        return TestCase("expr", left=ast.unparse(test.operand), op="not", setup=setup)
    return TestCase("expr", left=ast.unparse(test), op="truth", setup=setup)


def _constant_assert(test: ast.expr) -> bool:
    if isinstance(test, ast.Compare):
        return is_literal(test.left) and all(is_literal(c) for c in test.comparators)
    return is_literal(test)


def assert_tests(source: str, setup: str = "") -> tuple[TestCase, ...]:
    """Tests from a module of assert statements (e.g. MBPP's ``test_list`` joined by lines).

    Args:
        source: Python source; top-level asserts become tests, other top-level statements
            join the setup of the asserts after them, any other statement that contains an
            assert (a loop, a with block) becomes an exec test.
        setup: source run before every test (MBPP's ``test_setup_code``).

    Raises:
        ValueError: the source does not parse, or holds no test.
    """
    try:
        module = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(
            f"the assert tests do not parse: {error.msg} (line {error.lineno})"
        ) from None
    tests: list[TestCase] = []
    lines = [setup] if setup.strip() else []
    for statement in module.body:
        context = "\n".join(lines)
        if isinstance(statement, ast.Assert):
            for part in _split_and(statement.test):
                test = _expr_test(part, context)
                if test is not None:
                    tests.append(test)
                elif not _constant_assert(part):
                    tests.append(
                        TestCase("exec", code=f"assert {ast.unparse(part)}", setup=context)
                    )
        elif any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
            tests.append(TestCase("exec", code=ast.unparse(statement), setup=context))
        else:
            lines.append(ast.unparse(statement))
    if not tests:
        raise ValueError("the assert tests hold no assert about the program")
    return tuple(tests)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and (isinstance(statement.value.value, str))
    )


def check_function_tests(test_source: str, entry_point: str) -> tuple[TestCase, ...]:
    """Tests from HumanEval's ``test`` field: module-level code plus ``def check(candidate)``.

    When the body of ``check`` is asserts only (besides a docstring, ``pass`` and imports), each
    assert becomes a test as in ``assert_tests`` with ``candidate = entry_point`` in its setup;
    otherwise the whole test source followed by ``check(entry_point)`` is one exec test.

    Raises:
        ValueError: the source does not parse or defines no ``check`` with one argument.
    """
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python name; got {entry_point!r}")
    try:
        module = ast.parse(test_source)
    except SyntaxError as error:
        raise ValueError(
            f"the check source does not parse: {error.msg} (line {error.lineno})"
        ) from None
    checks = [s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if not checks or len(checks[-1].args.args) != 1:
        raise ValueError("the test source defines no check(candidate) function")
    check = checks[-1]
    argument = check.args.args[0].arg
    preamble = [ast.unparse(s) for s in module.body if s is not check]
    body = [s for s in check.body if not _is_docstring(s) and not isinstance(s, ast.Pass)]
    simple = all(isinstance(s, (ast.Assert, ast.Import, ast.ImportFrom)) for s in body)
    if simple and any(isinstance(s, ast.Assert) for s in body):
        source = "\n".join(ast.unparse(s) for s in body)
        setup = "\n".join([*preamble, f"{argument} = {entry_point}"])
        try:
            return assert_tests(source, setup=setup)
        except ValueError:
            pass
    return (TestCase("exec", code=f"{test_source}\ncheck({entry_point})"),)


def in_process_count(tests) -> int:
    """How many tests run their check inside the sandboxed process (exec tests)."""
    return sum(t.kind == "exec" for t in tests)
