"""Checkpoint folders on disk: written under a temporary name and renamed when complete, each with a manifest of its
files' sizes and checksums; choosing (and verifying) the checkpoint to resume from; refusing to train into a folder
that holds another run, or that another live run is training into (a lock held for the run's life); a full disk
during a save named as such, with the partial save removed and the earlier files kept.

A save writes `tmp-checkpoint-N/checkpoint-N/`, then `manifest.json` inside it, then renames it to `checkpoint-N`.
A crash at any point leaves either the previous checkpoints untouched or a `tmp-` folder that nothing mistakes for
a checkpoint (transformers' own checkpoint search and rotation only match `checkpoint-<digits>`).

Checksums are xxh3-128 (`xxhash`): the manifest guards against corruption (a truncated copy, overwritten bytes), not
against an adversary, and xxh3 reads at disk speed where sha256 costs minutes per 8B checkpoint with optimizer
states (`scripts/bench_checksum.py`).
"""

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager

import xxhash

from ..cli import UsageError

logger = logging.getLogger("llada_xdlm.train")

MANIFEST = "manifest.json"
STAGING_PREFIX = "tmp-"
FINAL_STAGING = STAGING_PREFIX + "model"  # the final save, in output_dir until it is complete
CHECKPOINT = re.compile(r"^(?:tmp-)?checkpoint-(\d+)$")
READ_CHUNK = 8 << 20  # bytes
# A checkpoint's files that only resuming needs (the rest is the model as a final save writes it).
RESUME_STATE = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|data_state_\d+\.pt|"
                          r"manifest\.json|latest|zero_to_fp32\.py|global_step\d+)$")
LOCK_FILE = ".run.lock"  # in output_dir while a run trains into it: the holder's pid and host
LOW_SPACE = 64 << 20  # bytes: a write that fails with less free space than this ran out of it


class CheckpointError(UsageError):
    """A checkpoint is incomplete or does not match its manifest."""


class OutputDirInUse(UsageError):
    """Another live run holds output_dir's lock."""


class DiskFullError(OSError):
    """A save ran out of space; the partial save was removed, earlier checkpoints and model files are untouched."""


def checksum(path: str) -> str:
    """xxh3-128 of a file's bytes (hex)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def checkpoint_files(folder: str) -> list[str]:
    """Every file under `folder` but the manifest, as sorted '/'-separated relative paths."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(f for f in found if f != MANIFEST)


def write_manifest(folder: str) -> None:
    """Record the size and checksum of every file in `folder` (written to a temporary file, then renamed)."""
    files = {}
    for name in checkpoint_files(folder):
        path = os.path.join(folder, name)
        files[name] = {"size": os.path.getsize(path), "xxh3_128": checksum(path)}
    tmp = os.path.join(folder, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, MANIFEST))


def verify_checkpoint(folder: str) -> None:
    """Raise CheckpointError naming the first file that is missing, has another size, or another checksum than the
    manifest records. Sizes are checked for all files before any checksum is read (a truncation shows at once)."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise CheckpointError(f"{folder} has no {MANIFEST}: its save did not complete.")
    files = read_manifest(manifest_path)
    for name, entry in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST}).")
        size = os.path.getsize(path)
        if size != entry["size"]:
            raise CheckpointError(
                f"{path} has {size} bytes, {MANIFEST} records {entry['size']}: truncated or replaced."
            )
    for name, entry in files.items():
        path = os.path.join(folder, name)
        if checksum(path) != entry["xxh3_128"]:
            raise CheckpointError(f"{path} does not match its checksum in {MANIFEST}: the file is corrupted.")


def read_manifest(path: str) -> dict[str, dict]:
    """{relative path: {"size", "xxh3_128"}} from a manifest; CheckpointError for one that is not a readable,
    non-empty list of files (truncated, emptied, overwritten)."""
    try:
        with open(path, "rb") as f:
            files = json.loads(f.read())["files"]
        valid = isinstance(files, dict) and files and all(
            isinstance(e, dict) and type(e.get("size")) is int and isinstance(e.get("xxh3_128"), str)
            for e in files.values()
        )
    except (OSError, ValueError, TypeError, KeyError) as error:  # JSONDecodeError and UnicodeDecodeError included
        raise CheckpointError(f"{path} is damaged ({type(error).__name__}: {error}).") from error
    if not valid:
        raise CheckpointError(f"{path} is damaged (no list of files with size and checksum).")
    return files


def finish_checkpoint(staged: str, final: str) -> None:
    """Seal a fully written checkpoint: manifest, then rename `staged` to `final` (replacing a stale `final`, e.g.
    a corrupted one a resumed run skipped) and remove the now empty staging parent."""
    write_manifest(staged)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staged, final)
    os.rmdir(os.path.dirname(staged))


def newest_complete_checkpoint(output_dir: str) -> str:
    """The newest checkpoint in `output_dir` that verifies; logs the one taken and every newer one skipped (why)."""
    found = []
    if os.path.isdir(output_dir):
        found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT.match(name))]
    skipped = []
    for _, name in sorted(found, reverse=True):
        path = os.path.join(output_dir, name)
        if name.startswith(STAGING_PREFIX):
            skipped.append(f"{path}: an unfinished save (the run stopped while writing it)")
            continue
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            skipped.append(f"{path}: {error}")
            continue
        for reason in skipped:
            logger.warning("Resume: skipped %s", reason)
        logger.info("Resume: took %s, the newest complete checkpoint", path)
        return path
    reasons = "".join(f"\n  skipped {reason}" for reason in skipped)
    raise CheckpointError(
        f"resume_from_checkpoint: true, but {output_dir} has no complete checkpoint.{reasons}\nResume from an "
        "explicit path (resume_from_checkpoint: DIR/checkpoint-N), or start afresh in a new output_dir."
    )


def resolve_resume(resume: bool | str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from: None (a fresh run), the newest complete one in output_dir (True), or the
    given path, verified against its manifest."""
    if not resume:
        return None
    if resume is True:
        return newest_complete_checkpoint(output_dir)
    if not os.path.isdir(resume):
        raise UsageError(f"resume_from_checkpoint={resume!r} is not a directory.")
    verify_checkpoint(resume)
    logger.info("Resume: took %s (verified against its manifest)", resume)
    return resume


def resumes_in(resume: bool | str | None, output_dir: str) -> bool:
    """Whether a run resumes the run of `output_dir`: resume_from_checkpoint true, or a checkpoint inside it."""
    return resume is True or (
        isinstance(resume, str) and os.path.abspath(os.path.dirname(resume.rstrip("/"))) == os.path.abspath(output_dir)
    )


def check_output_dir(output_dir: str, resume: bool | str | None, overwrite: bool, main_process: bool) -> None:
    """Refuse an output_dir that holds another run's files, unless this run resumes it (resume_from_checkpoint true
    or a checkpoint inside it) or overwrite_output_dir is set; then the old run's checkpoints are deleted (by the
    main process), so they can never be taken for this run's."""
    entries = sorted(e for e in os.listdir(output_dir) if e != LOCK_FILE) if os.path.isdir(output_dir) else []
    if not entries or resumes_in(resume, output_dir):
        return
    if overwrite:
        old = [name for name in entries if CHECKPOINT.match(name)]
        if main_process:
            for name in old:
                shutil.rmtree(os.path.join(output_dir, name))
        logger.warning("overwrite_output_dir: replacing the run in %s (deleted its checkpoints %s)", output_dir, old)
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise UsageError(
        f"output_dir {output_dir!r} already holds another run's files ({shown}): training would replace them. "
        "Set resume_from_checkpoint: true to continue that run, or overwrite_output_dir: true to replace it "
        "(or choose another output_dir)."
    )


def read_state(folder: str) -> dict | None:
    """The trainer_state.json of a checkpoint or of a finished run's output_dir; None where there is none (or it is
    unreadable: such a run is not taken as finished)."""
    try:
        with open(os.path.join(folder, "trainer_state.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("global_step"), int) else None


@contextmanager
def run_lock(output_dir: str):
    """Hold an exclusive lock on output_dir/.run.lock while the block runs; OutputDirInUse naming the holder if a
    live process holds it. The kernel drops a flock when its process dies, so a killed run never blocks the next
    one; the file is removed on exit (while still locked: an opener of the removed file retries on the new one)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "a run that is starting"
            os.close(fd)
            raise OutputDirInUse(
                f"output_dir {output_dir!r} is in use by another run ({holder}): wait for it to end, or train into "
                "another output_dir."
            ) from None
        try:
            same_file = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the previous holder removed the file between our open and lock
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    try:
        yield
    finally:
        os.remove(path)
        os.close(fd)


def out_of_space(error: BaseException, folder: str) -> bool:
    """Whether a failed write under `folder` ran out of space: ENOSPC or EDQUOT anywhere in the exception chain, in
    its text (safetensors: "No space left on device (os error 28)"), or torch's zip writer failing ("unexpected
    pos", no errno) on a file system with less than LOW_SPACE free."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        if "unexpected pos" in text or "file write failed" in text:
            try:
                return shutil.disk_usage(folder).free < LOW_SPACE
            except OSError:
                return False
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def saving(staging: str, output_dir: str, what: str):
    """Run a save into `staging`; when it runs out of space, remove `staging` (freeing what it wrote) and raise
    DiskFullError naming output_dir. Other errors propagate with `staging` left as it is (like a killed save)."""
    try:
        yield
    except Exception as error:
        if not out_of_space(error, os.path.dirname(staging)):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        full = DiskFullError(
            f"no space left on device at {output_dir} while saving {what}: the partial save was removed; earlier "
            "checkpoints and model files are untouched. Free space, then resume (resume_from_checkpoint: true)."
        )
        full.errno = errno.ENOSPC
        raise full from error


def move_into(staged: str, output_dir: str) -> None:
    """Move a completed final save from `staged` into output_dir, replacing the files of the same names;
    trainer_state.json last, as it marks the run finished."""
    for name in sorted(os.listdir(staged), key=lambda name: name == "trainer_state.json"):
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staged, name), target)
    os.rmdir(staged)


def final_model_from(checkpoint: str, output_dir: str) -> None:
    """Complete the final save of a run that reached max_steps at `checkpoint` but stopped before (or while) writing
    its model into output_dir: the checkpoint's model files, hard-linked (no extra space; checkpoint files are never
    rewritten in place), moved in when all are there."""
    staged = os.path.join(output_dir, FINAL_STAGING)
    shutil.rmtree(staged, ignore_errors=True)
    with saving(staged, output_dir, "the final model"):
        ignore = lambda folder, names: [n for n in names if folder == checkpoint and RESUME_STATE.match(n)]  # noqa: E731
        shutil.copytree(checkpoint, staged, copy_function=_link_or_copy, ignore=ignore)
    move_into(staged, output_dir)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
