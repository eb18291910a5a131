"""The registry's files on disk: written atomically and durably, hashed, locked, and cleared of
exports that died half-way. Nothing here knows about versions or stages."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """`path` holds `text`, or what it held before: never a half-written file."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    # NamedTemporaryFile is 0600; the server (often another user in a container) must read it.
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)
    fsync_dir(path.parent)  # the rename itself survives a crash only once its directory is


def fsync_dir(path: Path) -> None:
    """Force a directory's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def files(root: Path) -> Iterator[Path]:
    """Every file under `root`, each directory's in name order."""
    for dirpath, _, filenames in os.walk(root):
        for name in sorted(filenames):
            yield Path(dirpath, name)


def sync_and_hash(path: Path) -> str:
    """The file's sha256, after forcing its contents to disk (a version is renamed into place
    only once every file of it is durable)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest()


def now() -> str:
    """The time in UTC, to the second, as the registry records it."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def exclusive(lock_file: Path, directory: Path) -> Iterator[None]:
    """An exclusive `flock` on `lock_file` (created if missing), then on `directory` unless it
    is `lock_file`'s own: always in that order, so two holders cannot deadlock."""
    with contextlib.ExitStack() as stack:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        stack.callback(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not directory.samefile(lock_file.parent):
            dir_fd = os.open(directory, os.O_RDONLY)
            stack.callback(os.close, dir_fd)
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        yield


def remove_stale(
    parent: Path, pattern: str, max_age_seconds: float, keep: Path | None = None
) -> list[Path]:
    """Delete the directories in `parent` matching `pattern` (except `keep`) in which nothing
    changed for `max_age_seconds`; returns them."""
    current = time.time()
    removed = []
    for path in sorted(parent.glob(pattern)):
        if path == keep or not path.is_dir():
            continue
        # The newest file counts: an export still writing keeps its directory fresh.
        newest = max((p.stat().st_mtime for p in files(path)), default=path.stat().st_mtime)
        if current - max(newest, path.stat().st_mtime) >= max_age_seconds:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
