from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pixvcs import HookFailed, Repo, UsageError
from pixvcs.hooks import SCRIPTS, install, script
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_the_hooks_folder_holds_the_installed_scripts() -> None:
    for name in SCRIPTS:
        path = ROOT / "hooks" / name
        assert path.read_text() == script(name, "pixvcs"), f"regenerate hooks/{name}"
        assert os.access(path, os.X_OK)


def test_installed_pre_commit_hook_blocks_a_corrupt_image(repo: Repo) -> None:
    make_dataset(repo.root, {"cat": 2})
    repo.add([repo.root])
    repo.commit("v1", author=AUTHOR)
    written = install(repo)
    assert {os.path.basename(p) for p in written} == {"pre-commit", "pre-push"}
    broken = Path(repo.root, "cat", "0000.jpg").read_bytes()[:300]
    Path(repo.root, "cat", "broken.jpg").write_bytes(broken)
    repo.add([repo.root], allow_invalid=True)
    head = repo.head_commit()
    with pytest.raises(HookFailed) as err:
        repo.commit("oops", author=AUTHOR)
    assert err.value.hook == "pre-commit" and "cat/broken.jpg" in err.value.output
    assert "images.decodable" in err.value.output
    assert repo.head_commit() == head and repo.status().staged_added == ["cat/broken.jpg"]
    assert repo.commit("on purpose", author=AUTHOR, verify=False) != head


def test_install_keeps_a_different_existing_hook_unless_forced(repo: Repo) -> None:
    hook = Path(repo.git_dir, "hooks", "pre-commit")
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(UsageError, match="--force"):
        install(repo, ["pre-commit"])
    install(repo, ["pre-commit"], force=True)
    assert "check --staged" in hook.read_text()
    install(repo, ["pre-commit"])  # the same script again: fine


def test_ci_templates_are_valid_yaml_calling_pixvcs_check() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["id"] == "pixvcs-check" and hooks[0]["entry"] == "pixvcs check --staged"
    action = yaml.safe_load((ROOT / "hooks" / "github" / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = " ".join(step.get("run", "") for step in action["runs"]["steps"])
    assert "pixvcs check" in steps and "GITHUB_STEP_SUMMARY" in steps
    gitlab = yaml.safe_load((ROOT / "hooks" / "gitlab" / "pixvcs-check.gitlab-ci.yml").read_text())
    job = gitlab["pixvcs-check"]
    assert any("pixvcs check" in line for line in job["script"])
    assert job["artifacts"]["reports"]["junit"] == "pixvcs-junit.xml"


def test_installed_pre_push_hook_blocks_a_range_that_breaks_the_policy(tmp_path: Path) -> None:
    remote = str(tmp_path / "shared.git")
    Repo.init(remote, bare=True).close()
    with Repo.init(str(tmp_path / "ds")) as repo:
        make_dataset(repo.root, {"cat": 2})
        repo.add([repo.root])
        repo.commit("v1", author=AUTHOR)
        repo.add_remote("origin", remote)
        install(repo)
        repo.push()  # a clean version passes the hook
        broken = Path(repo.root, "cat", "0000.jpg").read_bytes()[:300]
        Path(repo.root, "cat", "broken.jpg").write_bytes(broken)
        repo.add([repo.root], allow_invalid=True)
        bad = repo.commit("broken", author=AUTHOR, verify=False)
        with pytest.raises(HookFailed) as err:
            repo.push()
        assert err.value.hook == "pre-push" and "cat/broken.jpg" in err.value.output
        with Repo.open(remote) as r:
            assert r.branches()["main"] != bad, "nothing was pushed"
        repo.push(verify=False)
        with Repo.open(remote) as r:
            assert r.branches()["main"] == bad
