"""The in-sandbox runner of a whole test list: one forked process per test, inside ONE sandbox.

Run inside the sandbox as ``python -s -S -B case_runner.py`` with ``harness.py`` and
``solution.py`` next to it (standard library only). It reads one JSON request from stdin::

    {"nonce": N, "prelude": P, "case_timeout_s": T, "case_output_bytes": B,
     "cases": [{"mode": "stdio", "input": TEXT} | <a harness.py request without nonce/prelude>]}

and, for each case in order, forks a child that runs exactly what one sandbox run of that test
runs (``harness.run`` for call / expr / exec tests: the solution loaded afresh, then the test; a
stdin/stdout test: the solution executed as ``__main__`` with the case's input on fd 0 and fd 1
on a pipe). The runner itself never executes model-written code: it only forks, feeds, reads and
reaps, so it keeps its own clock. Per case it

- ends the child (its process group: ``SIGKILL``) when the case's wall clock ``T`` runs out, or
  when its stdout passes ``B`` bytes; what the child left in its group goes with it;
- reads the child's one result line (call / expr / exec) or its stdout (stdio) from a pipe of
  that case only (the child closes the runner's own result channel before any model code runs,
  so it cannot write lines for another case);
- writes ONE JSON line on its result channel (the original stdout):
  ``{"nonce", "case": i, "status": exit status (negative: signal), "timeout": bool,
  "output_limit": bool, "cpu_s", "wall_s", "record": the child's result line text or None,
  "stdout": base64 of the child's stdout (stdio)}``.

So one hanging or crashing test ends that test only: the next one still runs and reports.
The per-process limits of the sandbox (CPU seconds, memory, file size, processes) apply to each
child as they apply to a one-test run (a forked child starts with zero CPU time). The grader
decides every verdict from these raw reports (``srpo.code.batch.judge_cases``); it never trusts a
verdict written here, and it never sends an expected value.
"""

import base64
import builtins
import io
import json
import os
import select
import signal
import sys
import time

import harness

_monotonic, _write, _read, _dumps = time.monotonic, os.write, os.read, json.dumps


def _stdio_child(source: str, input_path: str, out_fd: int) -> None:
    """A stdin/stdout test in the child: the solution runs as ``__main__`` (never returns)."""
    status = 0
    fd = os.open(input_path, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    os.dup2(out_fd, 1)
    os.close(out_fd)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), "utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), "utf-8")
    sys.argv = ["solution.py"]
    namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)  # noqa: S102 - in the sandbox
    except SystemExit as done:  # as an interpreter exits: None / 0 fine, a text is an error
        code = done.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the program's own failure
        import traceback

        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a closed or broken stdout: the output is what it is
        pass
    os._exit(status & 0xFF)


def _child(case: dict, request: dict, result_fd: int, write_fd: int, index: int) -> None:
    """The forked child of one case (never returns)."""
    try:
        os.setpgid(0, 0)  # its own group: the runner ends it and what it started at once
        os.close(result_fd)  # model code never holds the runner's channel
        os.dup2(2, 1)
        if case["mode"] == "stdio":
            source = request.get("prelude", "") + "\n" + _solution_text()
            _stdio_child(source, f"case{index}.in", write_fd)
        one = dict(case, nonce=request["nonce"], prelude=request.get("prelude", ""))
        harness.run(one, write_fd)
    finally:
        os._exit(70)  # only reached if the runner's own setup failed


def _solution_text() -> str:
    with open("solution.py", encoding="utf-8") as f:
        return f.read()


def _kill_group(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def _collect(pid: int, read_fd: int, limit: int, deadline: float) -> tuple:
    """Read the child's pipe until it closes and the child exits, or the deadline / the output
    limit ends it. Returns ``(data, status, timed_out, over_limit, rusage)``."""
    data, timed_out, over = bytearray(), False, False
    os.set_blocking(read_fd, False)
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3: poll the child
        pass
    exited, status, usage, open_pipe = False, None, None, True
    while not exited or open_pipe:
        now = _monotonic()
        if now >= deadline:
            timed_out = not exited
            break
        watch = [read_fd] if open_pipe else []
        if pidfd is not None and not exited:
            watch.append(pidfd)
        wait = min(deadline - now, 0.01 if pidfd is None or exited else 1.0)
        ready = select.select(watch, [], [], wait)[0] if watch else []
        if read_fd in ready:
            try:
                chunk = _read(read_fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                open_pipe = False
            elif chunk:
                data += chunk
                if len(data) > limit:
                    over = True
                    break
        if not exited:
            got, raw, usage = os.wait4(pid, os.WNOHANG)
            if got == pid:
                exited, status = True, raw
                if open_pipe:  # a process it left behind may hold the pipe: take what is there
                    deadline = min(deadline, _monotonic() + 0.2)
    _kill_group(pid)
    if not exited:
        _pid, status, usage = os.wait4(pid, 0)
    if pidfd is not None:
        os.close(pidfd)
    return bytes(data[:limit]), status, timed_out, over, usage


def main() -> None:
    request = json.loads(sys.stdin.read())
    nonce = request["nonce"]
    result_fd = os.dup(1)
    os.set_inheritable(result_fd, False)
    os.dup2(2, 1)
    timeout, limit = float(request["case_timeout_s"]), int(request["case_output_bytes"])
    for index, case in enumerate(request["cases"]):
        if case["mode"] == "stdio":
            with open(f"case{index}.in", "w", encoding="utf-8") as f:
                f.write(case["input"])
        read_fd, write_fd = os.pipe()
        start = _monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(case, request, result_fd, write_fd, index)
        os.close(write_fd)
        data, status, timed_out, over, usage = _collect(pid, read_fd, limit, start + timeout)
        os.close(read_fd)
        code = None
        if status is not None:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        report = {
            "nonce": nonce,
            "case": index,
            "status": code,
            "timeout": timed_out,
            "output_limit": over,
            "wall_s": _monotonic() - start,
            "cpu_s": (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0,
        }
        if case["mode"] == "stdio":
            report["stdout"] = base64.b64encode(data).decode()
        else:
            report["record"] = data.decode("utf-8", errors="replace")
        _write(result_fd, (_dumps(report) + "\n").encode())
    os._exit(0)


if __name__ == "__main__":
    main()
