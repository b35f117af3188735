"""Filesystem primitives: the one atomic-write helper, filesystem sync, the repo lock.

Every file pixvcs places into a store or the working tree goes through
:func:`atomic_write` / :func:`atomic_rename` here: write a temporary file in a
scratch directory on the same filesystem, make it durable, rename it into place.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import LockTimeout

_LIBC: list[Any] = []


def _libc() -> Any:
    """glibc through ctypes, loaded on first use (None when not Linux/glibc)."""
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            lib.syncfs  # noqa: B018
        except (OSError, AttributeError):  # not Linux/glibc: fall back to os.sync()
            lib = None
        _LIBC.append(lib)
    return _LIBC[0]


def sync_filesystem(path: str) -> None:
    """Flush every dirty page and inode of the filesystem holding ``path``.

    One ``syncfs`` makes a whole batch of freshly written temporary files
    durable at once, which costs one journal commit instead of one per file.
    """
    libc = _libc()
    if libc is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _TmpSalt:
    """Random per process (drawn again after a fork), stepped per name: the
    8 hex digits of :func:`unique_tmp` without a getrandom call per name."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.base = int.from_bytes(os.urandom(4), "big")
        self.count = itertools.count()  # next() on it is atomic: threads never share a step

    def next(self) -> int:
        # an odd step: 2**32 distinct names before one repeats
        return (self.base + next(self.count) * 0x9E3779B1) & 0xFFFFFFFF


_SALT = _TmpSalt()


def unique_tmp(tmp_dir: str, hint: str = "") -> str:
    return os.path.join(tmp_dir, f"{hint}{os.getpid()}-{time.monotonic_ns()}-{_SALT.next():08x}")


def atomic_rename(tmp: str, dest: str, *, readonly: bool = False) -> None:
    """Rename an already-durable temporary file into place, creating parents."""
    if readonly:
        os.chmod(tmp, 0o444)
    try:
        os.rename(tmp, dest)
    except FileNotFoundError:
        parent = os.path.dirname(dest)
        if not parent:
            raise
        # The parent was missing, or another thread or process has just created it
        # (two writers of objects with the same fan-out prefix race here): make
        # sure it exists and try once more. A missing tmp file fails again.
        os.makedirs(parent, exist_ok=True)
        os.rename(tmp, dest)


def atomic_write(
    dest: str, data: bytes, tmp_dir: str, *, readonly: bool = False, fsync: bool = True
) -> None:
    """Write ``data`` to ``dest`` through a temp file, fsync and rename."""
    tmp = unique_tmp(tmp_dir)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        atomic_rename(tmp, dest, readonly=readonly)
    except BaseException:
        # the rename failed, the temp file is ours alone: remove it
        with _suppress_missing():
            os.unlink(tmp)
        raise


@contextmanager
def _suppress_missing() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:  # already gone: nothing to clean up
        pass


#: Descriptors of repository locks this process holds -> the thread holding each
#: (closed in forked workers).
_held_locks: dict[int, int] = {}


def holding_lock() -> bool:
    """Does this thread hold a repository lock right now?"""
    return threading.get_ident() in _held_locks.values()


def worker_init() -> None:
    """Initializer for forked worker processes.

    A forked worker inherits the descriptor of the repository lock; were the
    parent killed, an orphaned worker would keep the flock alive and block
    every later command. So the worker closes its copy (the parent's lock is
    unaffected: flock is released only when all copies are closed) and asks
    the kernel to kill it when its parent dies.
    """
    for fd in list(_held_locks):
        try:
            os.close(fd)
        except OSError:  # already closed in this process
            pass
    _held_locks.clear()
    libc = _libc()
    if libc is not None:
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


@contextmanager
def repo_lock(path: str, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold the repository-wide write lock for the duration of the block.

    The lock is an ``flock`` on ``path``: the kernel drops it when the holder
    dies, so a lock left behind by a killed process never blocks the next
    command (the file itself stays, holding the last holder's pid for
    diagnostics). Waits up to ``timeout`` seconds for a live holder.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                    raise LockTimeout(path, holder or "unknown holder") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        import socket  # here: the status path takes no lock, and needs no socket

        os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)
        _held_locks[fd] = threading.get_ident()
        yield
    finally:
        # closing the descriptor releases the flock
        _held_locks.pop(fd, None)
        os.close(fd)
