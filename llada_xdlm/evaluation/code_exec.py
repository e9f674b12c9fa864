"""Run model-written Python programs for pass@k, each in its own limited subprocess.

Every program runs in a fresh interpreter (`python -I`) with a timeout (its whole process group is killed),
address-space / CPU-time / file-size limits set in the child before exec (resource.setrlimit), a temporary
working directory that is deleted afterwards, an environment holding only PATH / HOME / TMPDIR / LANG (no
inherited tokens or keys), and a guard that disables file deletion, renaming, writing outside the working
directory, process spawning and signals inside the program. This stops accidents and naive programs; it is not
a security boundary against hostile code: run untrusted generations inside a container or VM as well.
"""

import os
import resource
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"

# Runs before every program: destructive functions raise PermissionError and files outside the working directory
# cannot be opened for writing; then the program runs (from its own file, so tracebacks show its line numbers).
_GUARD = '''\
import builtins, io, os, shutil, subprocess

def _disabled(*args, **kwargs):
    raise PermissionError("disabled while evaluating generated code")

_HOME = os.getcwd() + os.sep
_real_open, _real_os_open = io.open, os.open
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _inside(path):
    return isinstance(path, int) or os.path.realpath(path).startswith(_HOME)

def _open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"writing outside the working directory is disabled: {file!r}")
    return _real_open(file, mode, *args, **kwargs)

def _os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS and not _inside(path):
        raise PermissionError(f"writing outside the working directory is disabled: {path!r}")
    return _real_os_open(path, flags, *args, **kwargs)

builtins.open = io.open = _open
os.open = _os_open
for _name in ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
              "chown", "lchown", "link", "symlink", "kill", "killpg", "fork", "forkpty", "system", "popen",
              "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve", "posix_spawn", "posix_spawnp",
              "putenv", "unsetenv", "setuid", "chdir", "chroot"):
    if hasattr(os, _name):
        setattr(os, _name, _disabled)
for _name in ("rmtree", "move", "chown", "copytree", "copyfile", "copy", "copy2"):
    setattr(shutil, _name, _disabled)
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _disabled
with _real_open("program.py", encoding="utf-8") as _f:
    _source = _f.read()
exec(compile(_source, "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program: status is "passed", "failed" (exception / non-zero exit) or "timeout"."""

    status: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def check_code_eval_allowed() -> None:
    """Refuse to run generated code unless the user opted in with HF_ALLOW_CODE_EVAL=1."""
    if os.environ.get(ALLOW_ENV) != "1":
        raise PermissionError(
            f"Refusing to execute model-generated code: set {ALLOW_ENV}=1 and pass --confirm_run_unsafe_code to "
            f"lm_eval to opt in (found {ALLOW_ENV}={os.environ.get(ALLOW_ENV)!r}). Generated programs run in "
            f"limited subprocesses, but that is no sandbox against hostile code: prefer a container or VM."
        )


def _limits(memory_mb: int, cpu_seconds: int):
    """preexec_fn for the child: resource limits, applied after fork and before exec."""

    def apply():
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run one program (e.g. a solution followed by its asserts); passed = it exits with status 0 in time."""
    check_code_eval_allowed()
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout={timeout} and memory_mb={memory_mb} must be positive.")
    with tempfile.TemporaryDirectory(prefix="xdlm_exec_") as workdir:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        with open(os.path.join(workdir, "guard.py"), "w", encoding="utf-8") as f:
            f.write(_GUARD)
        env = {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        proc = subprocess.Popen(
            [sys.executable, "-I", "guard.py"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(memory_mb, int(timeout) + 1),
            start_new_session=True,  # own process group: the timeout kills whatever the program started
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet, so its group id is still ours
            proc.communicate()
            return ExecResult("timeout", "")
        status = "passed" if proc.returncode == 0 else "failed"
        return ExecResult(status, stderr.decode("utf-8", "replace")[-2000:])


def run_programs(
    programs: list[str], timeout: float = 10.0, memory_mb: int = 1024, num_workers: int | None = None
) -> list[ExecResult]:
    """run_program over many programs, `num_workers` subprocesses at a time; results in input order."""
    check_code_eval_allowed()
    num_workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(lambda p: run_program(p, timeout, memory_mb), programs))
