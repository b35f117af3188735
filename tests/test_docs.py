"""The docs are checked: the CLI reference cannot drift from the code, and every
example in docs/format.md and docs/python-api.md is a test fixture."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import importlib.util
import io
import os
import re
import sqlite3
from pathlib import Path
from types import ModuleType

import click
import click.testing
import pytest

import pixvcs
from pixvcs import cli, imageinfo, index, pointer, repo
from pixvcs.catalog import Catalog
from pixvcs.errors import InvalidPointer
from pixvcs.ingest import git_blob_id
from pixvcs.media import MediaStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REGENERATE = "python scripts/gen_cli_docs.py > docs/cli.md"

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_FIXTURE = re.compile(r"^<!-- fixture: ([\w-]+) -->\n```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def code_blocks(text: str, lang: str) -> list[str]:
    """Bodies of the fenced blocks whose info string is exactly ``lang``."""
    return [body for info, body in _FENCE.findall(text) if info.strip() == lang]


def fixtures(text: str) -> dict[str, str]:
    """Bodies of the fenced blocks marked ``<!-- fixture: NAME -->``, by name."""
    found: dict[str, str] = {}
    for name, _info, body in _FIXTURE.findall(text):
        assert name not in found, f"fixture {name!r} is marked twice"
        found[name] = body
    return found


@pytest.fixture(scope="module")
def format_md() -> str:
    return _read("format.md")


@pytest.fixture(scope="module")
def format_fixtures(format_md: str) -> dict[str, str]:
    return fixtures(format_md)


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def click_tree(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the click tree, walked independently of the generator."""
    out = [path]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                out.extend(click_tree(sub, (*path, name)))
    return out


def _normalise_sql(sql: str) -> list[str]:
    """Statements, whitespace-insensitive, without a trailing semicolon."""
    return [" ".join(s.split()) for s in sql.split(";") if s.strip()]


# -- docs/cli.md ----------------------------------------------------------------------
def test_cli_md_is_generated(gen: ModuleType) -> None:
    assert _read("cli.md") == gen.render(), (
        f"docs/cli.md is out of date with the CLI; regenerate it with: {REGENERATE}"
    )


def test_every_command_is_documented() -> None:
    text = _read("cli.md")
    headings = set(re.findall(r"^## (pixvcs.*)$", text, re.M))
    for path in click_tree(cli.main):
        title = " ".join(("pixvcs", *path))
        assert title in headings, f"{title} is missing from docs/cli.md; run: {REGENERATE}"


def test_every_json_output_is_described(gen: ModuleType) -> None:
    assert gen.undocumented_json() == [], (
        "describe their --json output in JSON_OUTPUT in scripts/gen_cli_docs.py, "
        f"then run: {REGENERATE}"
    )
    commands = {" ".join(p) for p in click_tree(cli.main)}
    stale = sorted(set(gen.JSON_OUTPUT) - commands)
    assert stale == [], f"JSON_OUTPUT describes commands that do not exist: {stale}"


def test_generated_help_equals_real_help(gen: ModuleType) -> None:
    """What cli.md shows is what `pixvcs CMD --help` prints on an 80-column terminal."""
    runner = click.testing.CliRunner()
    for path in click_tree(cli.main):
        result = runner.invoke(
            cli.main, [*path, "--help"], prog_name="pixvcs", terminal_width=gen.WIDTH
        )
        assert result.exit_code == 0, result.output
        assert result.output.rstrip() in gen.render(), " ".join(path)


# -- README.md --------------------------------------------------------------------------
def test_readme_has_the_fresh_machine_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("make demo", "make test", "make lint", "make bench"):
        assert command in readme
    for doc in ("docs/format.md", "docs/cli.md", "docs/python-api.md"):
        assert doc in readme
        assert (ROOT / doc).is_file()


# -- docs/format.md: pointers -----------------------------------------------------------
def test_format_md_valid_pointers_parse(format_md: str) -> None:
    blocks = code_blocks(format_md, "pointer")
    assert len(blocks) >= 2
    for block in blocks:
        p = pointer.parse_pointer(block.encode())
        assert pointer.is_oid(p.oid)


def test_format_md_invalid_pointers_are_rejected(format_md: str) -> None:
    blocks = code_blocks(format_md, "pointer-invalid")
    assert len(blocks) >= 3
    for block in blocks:
        data = block.encode()
        assert pointer.looks_like_pointer(data), "an invalid example must still claim to be one"
        with pytest.raises(InvalidPointer):
            pointer.parse_pointer(data)


def test_format_md_worked_example(format_fixtures: dict[str, str], tmp_path: Path) -> None:
    media = bytes.fromhex("".join(format_fixtures["example-media"].split()))
    ptr = format_fixtures["example-pointer"].encode()
    ids = dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in format_fixtures["example-ids"].splitlines())
    )
    oid = hashlib.sha256(media).hexdigest()
    assert ids["oid"] == oid
    assert int(ids["size"]) == len(media)
    # the pointer is exactly what pixvcs writes, and it parses to the same facts
    assert ptr == pointer.format_pointer(oid, len(media))
    assert pointer.parse_pointer(ptr) == pointer.Pointer(oid, len(media))
    # the git blob id of the pointer is what the tree entry holds
    assert ids["blob id"] == git_blob_id(ptr)
    assert f"({len(ptr)} bytes)" in _read("format.md")
    # the media path is the store's
    store = MediaStore(str(tmp_path / ".pixvcs" / "lfs"))
    assert ids["media path"] == os.path.relpath(store.path(oid), tmp_path)
    # and the bytes are a valid 2x2 PNG
    info = imageinfo.inspect_image(media)
    assert (info.format, info.width, info.height) == ("PNG", 2, 2)


def test_worked_example_is_what_add_and_commit_store(
    format_fixtures: dict[str, str], tmp_path: Path
) -> None:
    media = bytes.fromhex("".join(format_fixtures["example-media"].split()))
    ptr = format_fixtures["example-pointer"].encode()
    with pixvcs.Repo.init(str(tmp_path / "ds")) as r:
        (tmp_path / "ds" / "cats").mkdir()
        (tmp_path / "ds" / "cats" / "red.png").write_bytes(media)
        r.add(["cats"])
        r.commit("example", author="A <a@example.org>")
        [entry] = [e for e in r.ls() if e.path == "cats/red.png"]
        assert entry.blob == git_blob_id(ptr)
        assert r.store[entry.blob.encode()].as_raw_string() == ptr
        assert Path(r.media.path(entry.oid)).read_bytes() == media


# -- docs/format.md: files and schemas --------------------------------------------------
def test_format_md_gitattributes(format_fixtures: dict[str, str]) -> None:
    assert format_fixtures["gitattributes"].encode() == repo.GITATTRIBUTES


def test_format_md_config(format_fixtures: dict[str, str], tmp_path: Path) -> None:
    def parse(text: str) -> dict[str, dict[str, str]]:
        cp = configparser.ConfigParser()
        cp.read_string(text)
        return {s: dict(cp[s]) for s in cp.sections()}

    documented = parse(format_fixtures["config"])
    assert documented["pixvcs"]["formatversion"] == str(pixvcs.FORMAT_VERSION)
    with pixvcs.Repo.init(str(tmp_path / "ds")):
        pass
    actual = parse((tmp_path / "ds" / ".pixvcs" / "config").read_text())
    assert documented == actual


def test_format_md_index_schema(format_fixtures: dict[str, str]) -> None:
    assert _normalise_sql(format_fixtures["index-schema"]) == _normalise_sql(index.SCHEMA)


def test_format_md_catalog_schema(format_fixtures: dict[str, str], tmp_path: Path) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    catalog.close()
    db = sqlite3.connect(tmp_path / "catalog.db")
    try:
        actual = [
            sql
            for (sql,) in db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
    finally:
        db.close()
    assert _normalise_sql(format_fixtures["catalog-schema"]) == _normalise_sql(";".join(actual))


def test_format_md_phash_recipe(format_fixtures: dict[str, str]) -> None:
    assert format_fixtures["phash-recipe"].strip() == imageinfo.PHASH_RECIPE


def test_format_md_constants(format_md: str) -> None:
    assert f"`MAX_PIXELS` = {imageinfo.MAX_PIXELS}" in format_md
    assert f"`MAX_FRAMES` = {imageinfo.MAX_FRAMES}" in format_md
    assert f"RACY_NS = {index.RACY_NS}" in format_md
    assert f"at most {pointer.MAX_POINTER_SIZE} bytes long" in format_md
    assert f"`pixvcs.formatversion = {pixvcs.FORMAT_VERSION}`" in format_md
    assert pointer.VERSION_LINE.decode().strip() in format_md
    extensions = " ".join(imageinfo.IMAGE_EXTENSIONS)
    assert f"`{extensions}`" in format_md


# -- docs/python-api.md -------------------------------------------------------------------
def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = fixtures(_read("python-api.md"))["python-example"]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "docs/python-api.md", "exec"), {"__name__": "__docs__"})
    assert "as expected:" in out.getvalue()


def test_python_api_documents_the_repo_api() -> None:
    text = _read("python-api.md")
    for name in (
        "init",
        "open",
        "add",
        "rm",
        "status",
        "commit",
        "log",
        "diff",
        "checkout",
        "rollback",
        "branches",
        "create_branch",
        "create_tag",
        "merge",
        "ls",
        "fsck",
        "gc",
        "rebuild_catalog",
    ):
        assert callable(getattr(pixvcs.Repo, name)), name
        assert re.search(rf"`(Repo\.)?{name}\(", text), f"Repo.{name} is not documented"


def test_python_api_documents_every_error() -> None:
    text = _read("python-api.md")
    errors = [
        name
        for name in pixvcs.__all__
        if isinstance(getattr(pixvcs, name), type)
        and issubclass(getattr(pixvcs, name), pixvcs.PixvcsError)
    ]
    assert "PixvcsError" in errors
    for name in errors:
        assert name in text, f"{name} is missing from docs/python-api.md"
