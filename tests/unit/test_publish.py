"""kubectl cfo publish on local files: the reproducible pack, the ignore rules, the agent's checks,
immutable release ids, and that what publishes, the agent installs."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from customer_friendly.agent.release import Layout, install
from customer_friendly.contract.artifact import release_of
from customer_friendly.kubectl_cfo import view
from customer_friendly.kubectl_cfo.cli import main
from customer_friendly.kubectl_cfo.package import PackError, is_ignored, pack, parse_ignore
from customer_friendly.kubectl_cfo.publish import PUBLISHED, REPLACED, UNCHANGED, PublishError, publish


def make_app(root: Path) -> Path:
    """A small Rails-shaped tree with what a checkout holds beside the app."""
    files = {"config.ru": "run ->(env) { [200, {}, ['ok']] }\n", "config/puma.rb": "workers 2\n",
             "app/models/user.rb": "class User; end\n", "log/production.log": "noise\n",
             "tmp/cache/bootsnap": "cache\n", ".git/HEAD": "ref: refs/heads/main\n",
             "node_modules/x/index.js": "1\n", "app/assets/node_modules/y.js": "2\n",
             "app/models/log/entry.rb": "class Entry; end\n"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "bin").mkdir()
    (root / "bin" / "rails").write_text("#!/bin/sh\n")
    (root / "bin" / "rails").chmod(0o755)
    (root / "current-config").symlink_to("config/puma.rb")
    return root


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def test_the_same_tree_packs_to_the_same_bytes_whatever_its_mtimes_modes_and_place(tmp_path: Path) -> None:
    first = make_app(tmp_path / "checkout-1")
    second = tmp_path / "elsewhere" / "checkout-2"
    shutil.copytree(first, second, symlinks=True)
    for path in second.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_700_000_000, 1_700_000_000))
    (second / "config.ru").chmod(0o600)  # the owner's bits other than exec do not travel
    one = pack(first, tmp_path / "one.tar.gz")
    two = pack(second, tmp_path / "two.tar.gz")
    assert one.sha256 == two.sha256 == hashlib.sha256((tmp_path / "two.tar.gz").read_bytes()).hexdigest()
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_source_date_epoch_sets_the_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path / "app")
    default = pack(app, tmp_path / "a.tar.gz")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = pack(app, tmp_path / "b.tar.gz")
    assert dated.sha256 != default.sha256
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1_700_000_000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(PackError, match="SOURCE_DATE_EPOCH"):
        pack(app, tmp_path / "c.tar.gz")


def test_members_are_sorted_owned_by_nobody_and_leave_out_the_defaults(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    packed = pack(app, tmp_path / "r.tar.gz")
    listed = names(tmp_path / "r.tar.gz")
    assert listed == sorted(listed)
    assert "log" in listed and "tmp" in listed  # Rails expects the directories
    assert not [n for n in listed if n.startswith((".git", "log/", "tmp/")) or "node_modules" in n]
    assert "app/models/log/entry.rb" in listed  # only the app's own log/ is left out
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}
    assert members["bin/rails"].mode == 0o755 and members["config.ru"].mode == 0o644
    assert members["current-config"].issym() and members["current-config"].linkname == "config/puma.rb"
    assert packed.files == 5


def test_a_cfoignore_adds_rules_and_takes_defaults_back(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    (app / ".cfoignore").write_text("# comments and blank lines are skipped\n\n*.rb\n!config/puma.rb\n"
                                    "!/log/production.log\n/app/\n")
    listed = names(pack(app, tmp_path / "r.tar.gz").archive)
    assert "config/puma.rb" in listed and "log/production.log" in listed
    assert not [n for n in listed if n.startswith("app")]
    assert ".cfoignore" in listed


@pytest.mark.parametrize(("rule", "path", "is_dir", "ignored"), [
    ("log/", "log", True, True), ("log/", "log", False, False), ("/log/*", "app/log/x", False, False),
    ("/log/*", "log/x", False, True), ("*.rb", "a/b/c.rb", False, True), ("a/*.rb", "b/a/c.rb", False, False),
])
def test_ignore_rules_follow_gitignore(rule: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert is_ignored(path, is_dir, parse_ignore([rule])) is ignored


@pytest.mark.parametrize(("make", "refused"), [
    (lambda root: (root / "evil").symlink_to("/etc/passwd"), "absolute path"),
    (lambda root: (root / "up").symlink_to("../../outside"), "outside the release"),
    (lambda root: os.mkfifo(root / "pipe"), "special file"),
    (lambda root: (root / ".cfo-release.json").write_text("{}"), "agent's own files"),
])
def test_what_the_agent_would_refuse_is_not_published(tmp_path: Path, make: object, refused: str) -> None:
    app = make_app(tmp_path / "app")
    make(app)  # type: ignore[operator]
    with pytest.raises(PackError, match=refused):
        publish(app, "v1", f"file://{tmp_path}/store/{{release}}.tar.gz")
    assert not (tmp_path / "store").exists()


def test_release_ids_are_immutable_and_a_same_bytes_rerun_changes_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    source = f"file://{tmp_path}/store/{{release}}.tar.gz"
    first = publish(app, "v1", source)
    assert first.outcome == PUBLISHED and first.previous_sha256 is None
    written = (tmp_path / "store" / "v1.tar.gz").stat().st_mtime_ns
    again = publish(app, "v1", source)
    assert (again.outcome, again.sha256) == (UNCHANGED, first.sha256)
    assert (tmp_path / "store" / "v1.tar.gz").stat().st_mtime_ns == written
    (app / "config.ru").write_text("changed\n")
    with pytest.raises(PublishError, match=f"already published .* with sha256 {first.sha256}.* --force"):
        publish(app, "v1", source)
    forced = publish(app, "v1", source, force=True)
    assert (forced.outcome, forced.previous_sha256) == (REPLACED, first.sha256)
    assert (tmp_path / "store" / "v1.tar.gz.sha256").read_text() == f"{forced.sha256}  v1.tar.gz\n"


def test_what_publish_writes_the_agent_installs(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    source = f"file://{tmp_path}/store/{{release}}.tar.gz"
    published = publish(app, "v7", source)
    layout = Layout(tmp_path / "volume")
    layout.root.mkdir()
    assert install(layout, "v7", source, require_sha256=True)
    installed = layout.release_dir("v7")
    assert (installed / "config" / "puma.rb").read_text() == "workers 2\n"
    assert os.readlink(installed / "current-config") == "config/puma.rb"
    assert (installed / "bin" / "rails").stat().st_mode & 0o111
    assert published.sha256 in (installed / ".cfo-release.json").read_text()


def test_publish_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app(tmp_path / "app")
    source = f"file://{tmp_path}/store/{{release}}.tar.gz"
    assert main(["publish", str(app), "v1", "--source", source]) == 0
    assert capsys.readouterr().out.startswith(f"published file://{tmp_path}/store/v1.tar.gz (sha256 ")
    (app / "config.ru").write_text("changed\n")
    assert main(["publish", str(app), "v1", "--source", source]) == 1
    assert "release ids are immutable" in capsys.readouterr().err
    for bad, message in ((["v1", "--source", "file:///x/fixed.tar.gz"], "--source='file:///x/fixed.tar.gz' is inv"),
                         (["bad id", "--source", source], "invalid release id"),
                         (["v2", "--source", "https://h/{release}.tgz"], "only s3:// and file://")):
        assert main(["publish", str(app), *bad]) == 1
        assert message in capsys.readouterr().err


def test_release_of_reads_the_id_back_from_an_artifact_url() -> None:
    template = "s3://b/web/{release}.tar.gz"
    assert release_of(template, "s3://b/web/v42.tar.gz") == "v42"
    assert release_of(template, "s3://b/web/v42.tar.gz.sha256") is None
    assert release_of(template, "s3://b/web/a/b.tar.gz") is None
    assert release_of(template, "s3://b/other/v1.tar.gz") is None


def test_release_rows_mark_the_pods_and_the_wanted_release() -> None:
    def pod(name: str, release: str) -> dict:
        return {"metadata": {"name": name, "annotations": {"customer-friendly.dev/release": release}}}

    pods = [pod("web-a", "v2"), pod("web-b", "v2"), pod("web-c", "v1"), pod("web-d", "v0")]
    rows = view.release_rows([("v2", 20, 200.0, "b" * 64), ("v1", 10, 100.0, None)], "v2", "v1", pods)
    assert [(r["release"], r["pods"], r["serving"], r["note"]) for r in rows] == [
        ("v1", 1, "web-c", "previous"), ("v2", 2, "web-a, web-b", "wanted"), ("v0", 1, "web-d", "not published")]
    assert rows[1]["sha256"] == "b" * 12 and rows[0]["published"] == "1970-01-01T00:01:40Z"
