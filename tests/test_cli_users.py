"""``assay users`` and ``assay keys`` through the real command line (Typer's runner)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay._web.auth import authenticate, check_api_key
from assay.settings import load_settings


def _store(workspace: Path) -> Store:
    return Store(load_settings(workspace, env={}).resolved_store_url())


def test_users_add_hashes_the_password_and_keys_create_prints_a_working_key(tmp_path: Path) -> None:
    runner = CliRunner()
    ws = ["--workspace", str(tmp_path)]
    added = runner.invoke(app, [*ws, "users", "add", "alice", "--role", "admin", "--password-stdin"],
                          input="correct horse battery\n")
    assert added.exit_code == 0, added.output
    prompted = runner.invoke(app, [*ws, "users", "add", "bob"], input="long enough pw\nlong enough pw\n")
    assert prompted.exit_code == 0, prompted.output
    short = runner.invoke(app, [*ws, "users", "add", "eve", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    bad_role = runner.invoke(app, [*ws, "users", "add", "eve", "--role", "root", "--password-stdin"], input="x" * 9)
    assert bad_role.exit_code == 2
    listed = runner.invoke(app, [*ws, "users", "list"])
    assert listed.output.split() == ["alice", "admin", "bob", "annotator"]
    key = runner.invoke(app, [*ws, "keys", "create", "--owner", "ci"])
    assert key.exit_code == 0
    token = key.stdout.strip().splitlines()[-1]
    store = _store(tmp_path)
    account = authenticate(store, "alice", "correct horse battery")
    assert account is not None and account.role == "admin"
    assert authenticate(store, "bob", "long enough pw") is not None
    assert check_api_key(store, token)
    store.close()


def test_keys_list_and_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    ws = ["--workspace", str(tmp_path)]
    assert "no API key" in runner.invoke(app, [*ws, "keys", "list"]).output
    first = runner.invoke(app, [*ws, "keys", "create", "--owner", "ci"]).stdout.strip().splitlines()[-1]
    second = runner.invoke(app, [*ws, "keys", "create", "--owner", "bot"]).stdout.strip().splitlines()[-1]
    listed = runner.invoke(app, [*ws, "keys", "list"])
    assert listed.exit_code == 0 and first[:12] in listed.stdout and "ci" in listed.stdout
    assert first not in listed.stdout  # only the prefix is ever shown
    too_short = runner.invoke(app, [*ws, "keys", "revoke", first[:5]])
    assert too_short.exit_code == 2 and "8 characters" in too_short.output
    assert runner.invoke(app, [*ws, "keys", "revoke", "nosuchkey-prefix"]).exit_code != 0
    revoked = runner.invoke(app, [*ws, "keys", "revoke", first])
    assert revoked.exit_code == 0, revoked.output
    store = _store(tmp_path)
    assert not check_api_key(store, first) and check_api_key(store, second)
    store.close()
    lines = runner.invoke(app, [*ws, "keys", "list"]).stdout.splitlines()
    assert [("revoked" in line) for line in lines] == [True, False]
    again = runner.invoke(app, [*ws, "keys", "revoke", first])
    assert again.exit_code != 0 and "not found" in again.output.lower()
