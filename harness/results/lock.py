"""One writer per run folder.

A run (or an upgrade) holds an exclusive ``flock`` on ``DIR/.lock`` while it writes ``DIR``,
so a second ``harness run`` started on the same folder is refused at once, in one line,
instead of reranking everything again and interleaving its samples with the first's.

The operating system drops a ``flock`` when its holder exits, however it exits (kill -9
included): a ``.lock`` file that is present but not locked is stale by construction and is
taken over silently. A writer removes its lock file as it releases it. Readers (report, gate,
baseline, export) never lock: they read only finished folders, whose ``results.json`` is
written atomically.

Windows has no ``fcntl``: there, and on file systems without ``flock``, the folder is not
locked and keeping one writer per folder is the user's to do (the project targets Linux and
macOS).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from harness.errors import HarnessError
from harness.files import ensure_writable_folder
from harness.results.provenance import utc_now

try:
    import fcntl
except ImportError:  # Windows: no flock, so no lock (see the module docstring)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
# flock is not supported here (some network and FUSE file systems): run unlocked, as before.
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class RunFolderBusy(HarnessError):
    """Another process holds the run folder's lock: it is writing that folder now."""


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s write lock for the block, creating the folder if needed;
    :class:`RunFolderBusy` at once when another process holds it.

    Folders this creates are removed again on the way out when the block left them empty,
    so a run refused before it wrote anything leaves no trace.
    """
    created = _missing_folders(run_dir)
    path = run_dir / LOCK_FILE
    fd: int | None = None
    try:
        ensure_writable_folder(run_dir, "the run folder")
        fd = _acquire(path, run_dir) if fcntl is not None else None
        yield
    finally:
        if fd is not None:
            with suppress(OSError):
                if _is_open_file(fd, path):  # never another writer's fresh lock file
                    path.unlink()
            os.close(fd)  # releases the flock
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (the run wrote something): kept, and so are its parents


def _acquire(path: Path, run_dir: Path) -> int | None:
    """The open, locked lock file, stamped with who holds it; None where flock is not
    supported. A writer may remove the file between our open and our flock: then the lock
    we got is on a file no one else can see, so it is taken again on the file at ``path``."""
    assert fcntl is not None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"{run_dir} is being written by another harness run{holder}; wait for it to "
                "finish or use another --out"
            ) from None
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            path.unlink(missing_ok=True)
            os.close(fd)
            return None
        if _is_open_file(fd, path):
            break
        os.close(fd)
    stamp = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()}
    try:
        os.ftruncate(fd, 0)  # a stale holder's stamp goes
        os.pwrite(fd, (json.dumps(stamp) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(fd: int) -> str:
    """`` (pid 123 on host, since 2025-01-01T10:00:00+00:00)``, or "" when the lock file
    cannot be read (its holder may not have stamped it yet)."""
    try:
        stamp = json.loads(os.pread(fd, 4096, 0))
        return f" (pid {int(stamp['pid'])} on {stamp['host']}, since {stamp['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _is_open_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _missing_folders(run_dir: Path) -> list[Path]:
    """``run_dir`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing
