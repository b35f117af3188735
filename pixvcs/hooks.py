"""Git-style hooks: scripts in ``.pixvcs/hooks/`` that pixvcs runs, as git does.

``pre-commit`` runs before ``commit`` (a non-zero exit refuses the commit) and
``pre-push`` before ``push`` (arguments: remote name and URL; on stdin, one
line per ref: ``<local ref> <local sha> <remote ref> <remote sha>``, git's
format). ``pixvcs hooks install`` writes the scripts below, which run
``pixvcs check``; the same scripts, calling ``pixvcs`` from PATH, are in the
project's top-level ``hooks/`` folder for repositories that want to copy them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import HookFailed, UsageError

if TYPE_CHECKING:
    from .repo import Repo

PRE_COMMIT = """#!/bin/sh
# pixvcs pre-commit hook: the staged version must satisfy the dataset's policy
# (pixvcs.toml; see docs/ci.md). Skip once with: pixvcs commit --no-verify
exec {pixvcs} check --staged
"""

PRE_PUSH = """#!/bin/sh
# pixvcs pre-push hook: every pushed range must satisfy the dataset's policy.
# stdin: <local ref> <local sha> <remote ref> <remote sha>, one line per ref.
zero=0000000000000000000000000000000000000000
status=0
while read -r local_ref local_sha remote_ref remote_sha; do
    [ "$local_sha" = "$zero" ] && continue          # a deletion: nothing to check
    if [ "$remote_sha" = "$zero" ]; then
        {pixvcs} check "$local_sha" || status=1      # a new ref: the whole version
    else
        {pixvcs} check "$remote_sha..$local_sha" || status=1
    fi
done
exit $status
"""

SCRIPTS = {"pre-commit": PRE_COMMIT, "pre-push": PRE_PUSH}


def script(name: str, pixvcs: str | None = None) -> str:
    """The hook script ``name``, calling ``pixvcs`` (default: this Python's pixvcs)."""
    command = pixvcs or f'"{sys.executable}" -m pixvcs.cli'
    return SCRIPTS[name].format(pixvcs=command)


def install(repo: Repo, names: Sequence[str] = tuple(SCRIPTS), *, force: bool = False) -> list[str]:
    """Write the hook scripts into the repository; returns the paths written.
    An existing different hook is kept unless ``force``."""
    hooks_dir = os.path.join(repo.git_dir, "hooks")
    os.makedirs(hooks_dir, exist_ok=True)
    written = []
    for name in names:
        if name not in SCRIPTS:
            raise UsageError(f"unknown hook {name!r} (known: {', '.join(SCRIPTS)})")
        path = os.path.join(hooks_dir, name)
        text = script(name)
        if os.path.exists(path) and not force:
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.read() != text:
                    raise UsageError(f"{path} exists and differs (use --force to replace it)")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o755)
        written.append(path)
    return written


def run(repo: Repo, name: str, args: Sequence[str] = (), stdin: str = "") -> None:
    """Run hook ``name`` if the repository has it (an executable file); raise
    HookFailed with its output when it exits non-zero."""
    path = os.path.join(repo.git_dir, "hooks", name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return
    proc = subprocess.run(
        [path, *args], cwd=repo.root, input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise HookFailed(name, proc.returncode, (proc.stdout + proc.stderr).strip())
