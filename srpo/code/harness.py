"""The in-sandbox harness: loads the solution, evaluates one test's expressions, reports values.

Run inside the sandbox as ``python -s -S -B harness.py`` with the solution in ``solution.py`` next
to it (a standalone script, standard library only). It reads one JSON request from stdin:

- ``{"mode": "call", "func_name": F, "args": [...]}``: call ``Solution().F(*args)`` if the solution
  defines a class ``Solution`` with that attribute (LeetCode style), else the function ``F``;
- ``{"mode": "expr", "exprs": [E1, E2]}``: evaluate each expression in the solution's namespace;
- ``{"mode": "exec", "code": S}``: execute statements S there (the in-process fallback).

Every request also carries ``nonce``, ``prelude`` (source run before the solution, e.g. the
imports LiveCodeBench's harness provides) and ``setup`` (test-side source run after the solution).

It writes ONE JSON line to the original stdout: ``{"nonce", "ok": true, "values": [repr, ...]}``
or ``{"nonce", "ok": false, "error": "..."}``; the solution's own prints go to stderr (fd 1 is
pointed at fd 2 before the solution runs). The grader never trusts a verdict from here: it parses
the values with a literal parser and compares them with the expected values it kept to itself.
The harness only makes the values hard to fake by accident: the functions it uses are bound
before the solution runs, and the builtins module is restored before each evaluation.
"""

import builtins
import json
import os
import sys

_write, _dumps, _repr, _exit, _dict = os.write, json.dumps, repr, os._exit, dict


def _report(fd: int, nonce: str, **fields) -> None:
    _write(fd, (_dumps({"nonce": nonce, **fields}) + "\n").encode())


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _restore(snapshot: dict) -> None:
    builtins.__dict__.clear()
    builtins.__dict__.update(snapshot)


def _entry_point(namespace: dict, name: str):
    cls = namespace.get("Solution")
    if isinstance(cls, type) and hasattr(cls, name):
        return getattr(cls(), name)
    if name in namespace:
        return namespace[name]
    raise NameError(f"the solution defines no function {name!r} (nor Solution.{name})")


def run(request: dict, result_fd: int) -> None:
    """Load the solution, evaluate one test of ``request`` and report on ``result_fd``; never
    returns (``os._exit``). The caller has pointed fd 1 at fd 2 (the solution's prints go to
    stderr); ``case_runner.py`` calls this in a forked child per test."""
    nonce = request["nonce"]
    snapshot = _dict(builtins.__dict__)
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    with open("solution.py", encoding="utf-8") as f:
        source = request.get("prelude", "") + "\n" + f.read()
    try:
        exec(compile(source, "solution.py", "exec"), namespace)  # noqa: S102 - in the sandbox
        _restore(snapshot)
        if request.get("setup"):
            exec(compile(request["setup"], "test_setup", "exec"), namespace)  # noqa: S102
        mode = request["mode"]
        values = []
        if mode == "call":
            function = _entry_point(namespace, request["func_name"])
            _restore(snapshot)
            values.append(function(*request["args"]))
        elif mode == "expr":
            for text in request["exprs"]:
                _restore(snapshot)
                values.append(eval(compile(text, "test", "eval"), namespace))  # noqa: S307
        elif mode == "exec":
            _restore(snapshot)
            exec(compile(request["code"], "test", "exec"), namespace)  # noqa: S102
        else:
            raise ValueError(f"unknown mode {mode!r}")
        texts = [_repr(v) for v in values]
    except BaseException as error:  # noqa: BLE001 - SystemExit too: exiting early is a failure
        _report(result_fd, nonce, ok=False, error=_describe(error))
        _exit(0)
    _report(result_fd, nonce, ok=True, values=texts)
    _exit(0)


def main() -> None:
    request = json.loads(sys.stdin.read())
    result_fd = os.dup(1)
    os.set_inheritable(result_fd, False)
    os.dup2(2, 1)  # the solution's prints go to stderr
    run(request, result_fd)


if __name__ == "__main__":
    main()
