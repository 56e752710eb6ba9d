"""Break-it tests of the sandbox (srpo.code.sandbox): each attack ends with the right outcome,
within its limit, leaving no process and no file behind -- and each is run again with the layer
that stops it removed (``removed``), where the attack must then get through. That second run is
what shows the limit, not luck, stops the attack.

Attacks that would harm the machine without their limit (a real fork bomb, a real 10 GB
allocation, killing the test process) run in full only with the limit in place; their ablations
are scaled down (a bounded fork loop, a 400 MB allocation, a decoy process).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from srpo.code.sandbox import LAYERS, Sandbox, SandboxConfig
from tests.srpo.code_helpers import leftovers, sandbox_dirs, time_limit  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
BASE = SandboxConfig(
    wall_timeout_s=3,
    cpu_time_s=1,
    memory_bytes=512 * 2**20,
    file_size_bytes=2**20,
    open_files=64,
    processes=16,
    max_output_bytes=2**20,
    tmpfs_bytes=8 * 2**20,
)
ACTIVE = set(Sandbox(BASE).layers)


def run(code: str, stdin: bytes = b"", removed=(), **limits):
    """Run ``code`` under BASE with ``removed`` layers off and ``limits`` changed; check that
    nothing is left behind."""
    before = sandbox_dirs()
    config = replace(BASE, disable=frozenset(removed), **limits)
    result = Sandbox(config).run({"main.py": code}, "main.py", stdin)
    assert sandbox_dirs() == before, "a temporary directory was left behind"
    return result


def needs(*layers):
    """Skip when none of ``layers`` is active here (the attack is then NOT stopped: the
    skip reason says so)."""
    if not ACTIVE & set(layers):
        pytest.skip(
            f"no {' / '.join(layers)} layer on this machine: this attack is not stopped "
            "here (docs/code.md, fallbacks)"
        )


def removable(*layers):
    """The ablation needs the layers active here (else removing them shows nothing)."""
    missing = set(layers) - ACTIVE
    if missing:
        pytest.skip(f"layers {sorted(missing)} are not active on this machine")


def test_layers_are_reported_and_the_expected_ones_are_active_here():
    assert ACTIVE <= set(LAYERS)
    assert {"session", "subreaper", "rlimits", "output_cap"} <= ACTIVE
    result = run("print('ok')")
    assert result.cause == "exit" and result.returncode == 0 and result.stdout == b"ok\n"
    assert set(result.layers) == ACTIVE
    if "mountns" in ACTIVE:
        assert result.fs_view in ("pivot_root", "chroot")
        if os.uname().machine in ("x86_64", "aarch64"):  # the syscall numbers we know
            assert result.fs_view == "pivot_root"
    if os.geteuid() == 0:
        assert "uid" in ACTIVE and "userns" not in ACTIVE
    with pytest.raises(ValueError, match="session"):
        SandboxConfig(disable={"session"})
    with pytest.raises(ValueError, match="unknown layers"):
        SandboxConfig(disable={"seccomp"})


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    start = time.monotonic()
    result = run("while True:\n    pass\n", wall_timeout_s=10)  # room for a loaded machine
    assert result.cause == "cpu_limit" and time.monotonic() - start < 10
    assert leftovers() == []


SPIN_2_CPU_SECONDS = """import time
start = time.process_time()
while time.process_time() - start < 2.0:
    pass
print("done")
"""


@pytest.mark.parametrize("removed", [None, "cpu limit"])
def test_cpu_time_is_bounded_by_rlimit_cpu(removed):
    # scaled ablation: 2 CPU seconds of spinning against a limit of 1 (an endless loop without
    # the limit would burn CPU until the wall clock)
    limits = {"cpu_time_s": None} if removed else {}
    result = run(SPIN_2_CPU_SECONDS, wall_timeout_s=20, **limits)
    held = result.cause == "cpu_limit"
    assert held == (removed is None), (result.cause, result.stdout)
    assert leftovers() == []


@pytest.mark.parametrize("wall_s, verdict", [(1.0, "wall_timeout"), (10.0, "exit")])
def test_sleeping_forever_is_stopped_by_the_wall_clock(wall_s, verdict):
    # the CPU limit cannot see a sleeper: only the wall clock stops it (10 s: "removed")
    start = time.monotonic()
    result = run("import time\ntime.sleep(2.5)\n", wall_timeout_s=wall_s)
    assert result.cause == verdict
    assert time.monotonic() - start < wall_s + 5.0  # the launcher's own start is not on its clock
    assert leftovers() == []


def test_fork_bomb_ends_and_leaves_nothing():
    needs("rlimits")
    start = time.monotonic()
    result = run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        wall_timeout_s=1.5,
    )
    assert result.cause in ("wall_timeout", "cpu_limit", "exit")
    assert time.monotonic() - start < 1.5 + 5.0
    assert leftovers() == []


BOUNDED_FORKS = """import os, time
made = 0
for _ in range(64):
    try:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        made += 1
    except OSError:
        break
print(made, flush=True)
"""


@pytest.mark.parametrize("removed", [None, "process limit"])
def test_process_count_is_bounded_by_rlimit_nproc(removed):
    needs("rlimits")
    if removed is None and os.geteuid() == 0:
        needs("uid")  # RLIMIT_NPROC is not enforced for root
    limits = {"processes": None} if removed else {}
    result = run(BOUNDED_FORKS, **limits)
    made = int(result.stdout.split()[0])
    held = made < BASE.processes
    assert held == (removed is None), made
    assert leftovers() == []  # the sleeping children were killed at the end of the run


ESCAPE = """import os, sys, time
if os.fork() == 0:
    os.setsid()
    time.sleep(30)
    os._exit(0)
print("parent done", flush=True)
"""


@pytest.mark.parametrize("removed", [None, ("pidns", "subreaper")])
def test_a_process_that_leaves_the_group_is_still_killed(removed):
    needs("pidns", "subreaper")
    if removed:
        removable(*removed)
    result = run(ESCAPE, removed=removed or ())
    assert result.stdout == b"parent done\n"
    survivors = leftovers()
    for pid in survivors:  # the ablation's escapee: clean up after showing it
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # until this machine's init has reaped it
        if not leftovers():
            break
        time.sleep(0.05)
    held = survivors == []
    assert held == (removed is None), survivors


@pytest.mark.parametrize("removed", [None, "memory limit"])
def test_memory_is_bounded_by_rlimit_as(removed):
    needs("rlimits")
    limits = {"memory_bytes": None} if removed else {"memory_bytes": 256 * 2**20}
    result = run("x = bytearray(400 * 2**20)\nprint('allocated')\n", **limits)
    held = result.returncode != 0 and b"MemoryError" in result.stderr
    assert held == (removed is None), (result.returncode, result.stderr[-200:])
    assert leftovers() == []


def test_a_10_gb_allocation_fails_fast():
    needs("rlimits")
    start = time.monotonic()
    result = run("x = bytearray(10 * 2**30)\n")
    assert result.cause == "exit" and result.returncode == 1 and b"MemoryError" in result.stderr
    assert result.maxrss_kb < 256 * 1024 and time.monotonic() - start < 10.0


@pytest.mark.parametrize("removed", [None, "file size limit"])
def test_file_size_is_bounded_by_rlimit_fsize(removed):
    needs("rlimits")
    limits = {"file_size_bytes": None} if removed else {}
    result = run("open('big', 'wb').write(b'x' * 4 * 2**20)\nprint('written')\n", **limits)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of killing the program
    held = result.returncode != 0 and b"File too large" in result.stderr
    assert held == (removed is None), (result.returncode, result.stderr[-200:])


@pytest.mark.parametrize("removed", [None, "mountns"])
def test_many_files_cannot_fill_the_disk(removed):
    needs("mountns")
    result = run(
        "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * 200_000)\nprint('written')\n",
        removed=(removed,) if removed else (),
    )
    held = result.returncode != 0 and b"No space left" in result.stderr
    assert held == (removed is None), result.stderr[-200:]


@pytest.mark.parametrize("removed", [None, "open files limit"])
def test_open_files_are_bounded_by_rlimit_nofile(removed):
    needs("rlimits")
    limits = {"open_files": None} if removed else {}
    result = run("files = [open('/dev/null') for _ in range(200)]\nprint(len(files))\n", **limits)
    held = result.returncode != 0 and b"Too many open files" in result.stderr
    assert held == (removed is None)


WRITE_OUTSIDE = """import sys
for path in sys.stdin.read().split():
    try:
        open(path, "w").write("escaped")
        print("wrote", path)
    except OSError as error:
        print("refused", path, type(error).__name__)
"""


@pytest.mark.parametrize("removed", [None, ("mountns",), ("mountns", "uid")])
def test_writing_outside_the_work_directory(removed):
    needs("mountns", "uid")
    if removed:
        removable(*removed)
    shared = Path(tempfile.mkdtemp(prefix="srpo-test-shared-"))  # like /tmp: anyone may write
    own = Path(tempfile.mkdtemp(prefix="srpo-test-own-"))  # the grader's: 0755, root-owned
    try:
        shared.chmod(0o1777)
        own.chmod(0o755)
        targets = [shared / "x", own / "x", REPO / "escaped-by-sandbox-test"]
        run(WRITE_OUTSIDE, " ".join(map(str, targets)).encode(), removed=removed or ())
        written = [t.exists() for t in targets]
        view = "mountns" in ACTIVE and "mountns" not in (removed or ())
        uid = "uid" in ACTIVE and "uid" not in (removed or ())
        assert written == [not view, not (view or uid), not (view or uid)]
    finally:
        for path in (shared, own):
            subprocess.run(["rm", "-rf", str(path)], check=False)
        (REPO / "escaped-by-sandbox-test").unlink(missing_ok=True)


READ_FILES = """import sys
for path in sys.stdin.read().split():
    try:
        print(open(path).read()[:200])
    except OSError as error:
        print("refused", type(error).__name__)
"""


@pytest.mark.parametrize("removed", [None, ("mountns",), ("mountns", "uid")])
def test_reading_the_graders_files(removed, tmp_path):
    """The repository's source (world-readable) and a held-out test file (0600, the grader's):
    the program prints what it can read."""
    needs("mountns", "uid")
    if removed:
        removable(*removed)
    secret = f"HELDOUT-{secrets.token_hex(8)}"
    held_out = Path(tempfile.mkdtemp(prefix="srpo-test-heldout-")) / "heldout.json"
    held_out.write_text(secret)
    held_out.chmod(0o600)
    held_out.parent.chmod(0o755)
    source = REPO / "srpo" / "code" / "sandbox.py"
    try:
        result = run(READ_FILES, f"{source} {held_out}".encode(), removed=removed or ())
    finally:
        subprocess.run(["rm", "-rf", str(held_out.parent)], check=False)
    view = "mountns" in ACTIVE and "mountns" not in (removed or ())
    uid = "uid" in ACTIVE and "uid" not in (removed or ())
    read_source = b"Run model-written Python" in result.stdout
    read_secret = secret.encode() in result.stdout
    assert (read_source, read_secret) == (not view, not (view or uid))


class Listener:
    """A TCP server on 127.0.0.1 that records whatever it receives."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.server.settimeout(3.0)
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            connection, _ = self.server.accept()
            connection.settimeout(2.0)
            self.received = connection.recv(100)
            connection.close()
        except OSError:
            pass

    def close(self):
        self.thread.join(timeout=5)
        self.server.close()


CONNECT = """import socket, sys
port = int(sys.stdin.read())
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", port))
    s.sendall(b"leaked")
    print("connected")
except OSError as error:
    print("refused", type(error).__name__)
"""


@pytest.mark.parametrize("removed", [None, "netns"])
def test_no_network_not_even_loopback(removed):
    needs("netns")
    listener = Listener()
    result = run(CONNECT, str(listener.port).encode(), removed=(removed,) if removed else ())
    if removed is None:  # nothing will connect: do not wait for the accept timeout
        socket.create_connection(("127.0.0.1", listener.port)).close()
    listener.close()
    held = listener.received != b"leaked" and b"connected" not in result.stdout
    assert held == (removed is None), (result.stdout, listener.received)


KILL = """import os, signal, sys
for word in sys.stdin.read().split():
    kind, number = word.split(":")
    target = os.getppid() if kind == "parent" else int(number)
    try:
        (os.killpg if kind == "group" else os.kill)(target, signal.SIGKILL)
        print("killed", word)
    except OSError as error:
        print("refused", word, type(error).__name__)
"""


@pytest.mark.parametrize("removed", [None, ("pidns",), ("uid",), ("pidns", "uid")])
def test_killing_processes_outside_the_sandbox(removed):
    """A decoy process of the grader's (own session), its group, and the program's parent:
    the decoy is alive after the run unless both the PID namespace and the uid are removed."""
    needs("pidns", "uid")
    if removed:
        removable(*removed)
    decoy = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        targets = f"pid:{decoy.pid} group:{decoy.pid} parent:0"
        result = run(KILL, targets.encode(), removed=removed or ())
        time.sleep(0.1)
        alive = decoy.poll() is None
        shielded = bool(ACTIVE & {"pidns", "uid"} - set(removed or ()))
        assert alive == shielded, result.stdout
    finally:
        decoy.kill()
        decoy.wait()
    assert leftovers() == []


def test_killing_the_grader_and_everything():
    """The real thing, only where a layer shields the grader: kill its pid, its group and
    kill(-1) (every process the program may signal)."""
    needs("pidns", "uid")
    me = os.getpid()
    code = (
        f"import os, signal\nfor f, a in ((os.kill, {me}), (os.killpg, {os.getpgid(me)}), "
        "(os.kill, -1)):\n    try:\n        f(a, signal.SIGKILL)\n    except OSError:\n"
        "        pass\nprint('still here')\n"
    )
    result = run(code)
    assert result.cause in ("exit", "sandbox_error") and os.getpid() == me  # we are alive


@pytest.mark.parametrize("removed", [None, "output cap"])
def test_huge_output_is_cut_at_the_cap(removed):
    if removed:  # bounded: 8 MiB, a cap of 1 MiB
        result = run("import sys\nsys.stdout.write('x' * 8 * 2**20)\n", removed=("output_cap",))
    else:  # unbounded: the run is ended at the cap
        start = time.monotonic()
        result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
        assert (
            result.cause == "output_limit" and time.monotonic() - start < BASE.wall_timeout_s + 5.0
        )
    held = len(result.stdout) <= BASE.max_output_bytes
    assert held == (removed is None)
    assert leftovers() == []


RECURSION = """import sys
sys.setrecursionlimit(10**7)
def f(n):
    return list(map(f, [n + 1]))
f(0)
"""


def test_stack_overflow_crashes_the_program_not_the_grader():
    """Deep recursion through C frames overflows the stack (SIGSEGV). The layer is the
    separate process itself: run in a stand-in for an in-process grader, the same code kills
    that process (the second half)."""
    result = run(RECURSION)
    assert result.cause in ("exit", "cpu_limit") and result.returncode != 0
    stand_in = subprocess.run([sys.executable, "-c", RECURSION], capture_output=True, timeout=60)
    assert stand_in.returncode == -signal.SIGSEGV


def test_a_missing_required_layer_is_an_error():
    from srpo.code.sandbox import SandboxUnavailable

    sandbox = Sandbox(replace(BASE, disable=frozenset({"netns"}), require=frozenset({"netns"})))
    with pytest.raises(SandboxUnavailable, match="netns"):
        sandbox.run({"main.py": "pass"}, "main.py")


UNPRIVILEGED = """import json, sys, types
package = types.ModuleType("srpo")  # srpo.code needs only the standard library: skip the
package.__path__ = [sys.argv[1]]  # package's __init__, which asks for torch
sys.modules["srpo"] = package
from srpo.code import sandbox
box = sandbox.Sandbox(sandbox.SandboxConfig(wall_timeout_s=5, cpu_time_s=2))
out = {"layers": list(box.layers)}
for name, code in (("net", "import socket; print(socket.socket().connect_ex(('127.0.0.1', 22)))"),
                   ("read", "print(open(%r).read()[:40])" % (sys.argv[1] + "/code/sandbox.py")),
                   ("ids", "import os; print(os.getuid(), len(os.listdir('/')))")):
    result = box.run({"main.py": "import sys\\n" + code}, "main.py")
    out[name] = [result.cause, result.returncode, result.stdout.decode()]
bare = sandbox.Sandbox(sandbox.SandboxConfig(wall_timeout_s=5, cpu_time_s=1, disable={"userns"}))
out["bare_layers"] = list(bare.layers)
loop = bare.run({"main.py": "while True:\\n    pass\\n"}, "main.py")
out["bare_loop"] = loop.cause
print(json.dumps(out))
"""


def test_an_unprivileged_grader_gets_namespaces_through_a_user_namespace(tmp_path):
    """Run the sandbox as user nobody (where this test runs as root): the layers come
    from a user namespace (no uid layer), and the network and the grader's files are still out
    of reach. Skipped where the kernel refuses unprivileged user namespaces: there the
    fallback applies (docs/code.md)."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not Path(python).exists() or not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs root (to become nobody), /usr/bin/python3 and setpriv")
    script = Path(tempfile.mkdtemp(prefix="srpo-test-nobody-")) / "probe.py"
    script.write_text(UNPRIVILEGED)
    script.parent.chmod(0o755)
    script.chmod(0o644)
    try:
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                python,
                str(script),
                str(REPO / "srpo"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    finally:
        subprocess.run(["rm", "-rf", str(script.parent)], check=False)
    assert done.returncode == 0, done.stderr[-500:]
    out = json.loads(done.stdout.splitlines()[-1])
    if "userns" not in out["layers"]:
        pytest.skip(f"no unprivileged user namespaces here; layers {out['layers']}")
    assert "uid" not in out["layers"]
    assert {"mountns", "netns", "pidns"} <= set(out["layers"])
    assert out["net"][2].strip() == str(101)  # ENETUNREACH: no interface is up
    assert out["read"][1] != 0 and "Run model-written" not in out["read"][2]  # no repo there
    uid, entries = out["ids"][2].split()
    assert uid == "1000"  # not 0 inside the namespace: no capabilities after exec
    # without a user namespace an unprivileged grader keeps only these (the fallback)
    assert out["bare_layers"] == ["session", "subreaper", "rlimits", "output_cap"]
    assert out["bare_loop"] == "cpu_limit"
    assert leftovers() == []
