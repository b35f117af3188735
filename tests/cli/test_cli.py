from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner, Result

from pixvcs.cli import main
from tests.imagegen import make_dataset, write_image

AUTHOR = "CLI Test <cli@example.org>"


def run(tmp: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(tmp), *args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.output, result.stderr if result.stderr_bytes else "")
    return result


def test_end_to_end_workflow(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    run(tmp_path, "init", "ds")
    make_dataset(str(ds), {"cat": 2, "dog": 2})
    out = json.loads(run(ds, "add", ".", "--json").output)
    assert len(out["added"]) == 4 and out["invalid"] == []
    st = json.loads(run(ds, "status", "--json").output)
    assert st["branch"] == "main" and "cat/0000.jpg" in st["staged"]["added"]
    assert set(st) >= {"staged", "modified", "deleted", "untracked"}
    c1 = json.loads(run(ds, "commit", "-m", "v1", "--author", AUTHOR, "--json").output)
    run(ds, "tag", "v1")
    os.rename(ds / "cat" / "0000.jpg", ds / "dog" / "relabelled.jpg")
    write_image(str(ds / "bird" / "0000.jpg"), 77)
    run(ds, "add", ".")
    run(ds, "commit", "-m", "v2", "--author", AUTHOR)

    log = json.loads(run(ds, "log", "--json").output)
    assert [c["message"] for c in log] == ["v2\n", "v1\n"]
    for c in log:
        assert set(c) >= {"id", "message", "author", "time", "parents"}
    assert log[1]["id"] == c1["id"] and log[0]["parents"] == [c1["id"]]
    assert run(ds, "log", "--oneline").output.splitlines()[0].endswith(" v2")

    d = json.loads(run(ds, "diff", "v1", "HEAD", "--json").output)
    assert d["added"] == ["bird/0000.jpg"] and d["removed"] == [] and d["modified"] == []
    assert d["renamed"] == [{"from": "cat/0000.jpg", "to": "dog/relabelled.jpg"}]
    assert d["classes"]["cat"] == {"before": 2, "after": 1}
    assert d["classes"]["dog"] == {"before": 2, "after": 3}
    text = run(ds, "diff", "v1", "HEAD").output
    assert "1 added" in text and "cat/0000.jpg -> dog/relabelled.jpg" in text and "class" in text
    assert "Renamed" not in run(ds, "diff", "v1", "HEAD", "--stat").output

    ls = json.loads(run(ds, "ls", "v1", "--json").output)
    img = next(e for e in ls if e["path"] == "cat/0000.jpg")
    assert (img["width"], img["height"], img["format"], img["kind"]) == (48, 40, "JPEG", "media")

    run(ds, "checkout", "v1")
    assert (ds / "cat" / "0000.jpg").exists() and not (ds / "bird").exists()
    run(ds, "checkout", "main")
    rb = json.loads(run(ds, "rollback", "v1", "-m", "back", "--json").output)
    assert rb["message"] == "back\n" and not (ds / "bird").exists()

    run(ds, "branch", "exp", "v1")
    branches = json.loads(run(ds, "branch", "--json").output)
    assert {b["name"]: b["current"] for b in branches} == {"exp": False, "main": True}
    show = json.loads(run(ds, "show", "HEAD", "--json").output)
    assert show["diff"]["removed"] == ["bird/0000.jpg"]
    assert json.loads(run(ds, "fsck", "--json").output)["ok"] is True
    run(ds, "gc")


def test_add_refuses_invalid_images_naming_each(tmp_path: Path) -> None:
    run(tmp_path, "init", ".")
    write_image(str(tmp_path / "ok.jpg"), 1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = run(tmp_path, "add", ".", code=1)
    assert "broken.png" in result.output and "empty.jpg" in result.output
    assert "nothing was staged" in result.output
    st = json.loads(run(tmp_path, "status", "--json").output)
    assert "ok.jpg" not in st["staged"]["added"]
    run(tmp_path, "add", ".", "--allow-invalid")


def test_errors_are_one_line_messages_with_exit_codes(tmp_path: Path) -> None:
    r = run(tmp_path, "status", code=1)
    assert "not a pixvcs repository" in r.output
    run(tmp_path, "init", ".")
    run(tmp_path, "commit", "-m", "x")  # init staged .gitattributes
    assert "nothing to commit" in run(tmp_path, "commit", "-m", "x", code=1).output
    assert "unknown revision" in run(tmp_path, "checkout", "nope", code=1).output


def test_newer_format_is_refused(tmp_path: Path) -> None:
    run(tmp_path, "init", ".")
    cfg = tmp_path / ".pixvcs" / "config"
    cfg.write_text(cfg.read_text().replace("formatversion = 1", "formatversion = 2"))
    r = run(tmp_path, "status", code=1)
    assert "format version 2 is newer" in r.output


def test_json_output_is_quiet_and_parseable(tmp_path: Path) -> None:
    run(tmp_path, "init", ".")
    make_dataset(str(tmp_path), {"a": 60})  # enough for the parallel path
    out = run(tmp_path, "add", ".", "--json").output
    assert len(json.loads(out)["added"]) == 60  # nothing but JSON on stdout


def test_merge_command(tmp_path: Path) -> None:
    run(tmp_path, "init", ".")
    make_dataset(str(tmp_path), {"a": 1})
    run(tmp_path, "add", ".")
    run(tmp_path, "commit", "-m", "base")
    run(tmp_path, "checkout", "-b", "side", "main")
    write_image(str(tmp_path / "b" / "x.jpg"), 5)
    run(tmp_path, "add", ".")
    run(tmp_path, "commit", "-m", "side")
    run(tmp_path, "checkout", "main")
    out = json.loads(run(tmp_path, "merge", "side", "--json").output)
    assert out["result"] == "fast-forward" and (tmp_path / "b" / "x.jpg").exists()
