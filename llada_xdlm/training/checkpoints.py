"""Checkpoint folders on disk: written under a temporary name and renamed when complete, each with a manifest of its
files' sizes and checksums; choosing (and verifying) the checkpoint to resume from; refusing to train into a folder
that holds another run.

A save writes `tmp-checkpoint-N/checkpoint-N/`, then `manifest.json` inside it, then renames it to `checkpoint-N`.
A crash at any point leaves either the previous checkpoints untouched or a `tmp-` folder that nothing mistakes for
a checkpoint (transformers' own checkpoint search and rotation only match `checkpoint-<digits>`).

Checksums are xxh3-128 (`xxhash`): the manifest guards against corruption (a truncated copy, overwritten bytes), not
against an adversary, and xxh3 reads at disk speed where sha256 costs minutes per 8B checkpoint with optimizer
states (`scripts/bench_checksum.py`).
"""

import json
import logging
import os
import re
import shutil

import xxhash

logger = logging.getLogger("llada_xdlm.train")

MANIFEST = "manifest.json"
STAGING_PREFIX = "tmp-"
CHECKPOINT = re.compile(r"^(?:tmp-)?checkpoint-(\d+)$")
READ_CHUNK = 8 << 20  # bytes


class CheckpointError(ValueError):
    """A checkpoint is incomplete or does not match its manifest."""


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
    with open(manifest_path) as f:
        files = json.load(f)["files"]
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
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r} is not a directory.")
    verify_checkpoint(resume)
    logger.info("Resume: took %s (verified against its manifest)", resume)
    return resume


def check_output_dir(output_dir: str, resume: bool | str | None, overwrite: bool, main_process: bool) -> None:
    """Refuse an output_dir that holds another run's files, unless this run resumes it (resume_from_checkpoint true
    or a checkpoint inside it) or overwrite_output_dir is set; then the old run's checkpoints are deleted (by the
    main process), so they can never be taken for this run's."""
    entries = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if not entries:
        return
    resumes_here = resume is True or (
        isinstance(resume, str) and os.path.abspath(os.path.dirname(resume.rstrip("/"))) == os.path.abspath(output_dir)
    )
    if resumes_here:
        return
    if overwrite:
        old = [name for name in entries if CHECKPOINT.match(name)]
        if main_process:
            for name in old:
                shutil.rmtree(os.path.join(output_dir, name))
        logger.warning("overwrite_output_dir: replacing the run in %s (deleted its checkpoints %s)", output_dir, old)
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise FileExistsError(
        f"output_dir {output_dir!r} already holds another run's files ({shown}): training would replace them. "
        "Set resume_from_checkpoint: true to continue that run, or overwrite_output_dir: true to replace it "
        "(or choose another output_dir)."
    )
