"""``assay users`` and ``assay keys``: accounts of the annotation app and API keys."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from assay._cli._common import console, err_console, get_ctx, handle_errors
from assay.exceptions import UsageError

# assay._web.auth (argon2-cffi, itsdangerous: the ``serve`` extra) is imported inside the
# commands, so the rest of the CLI works without it.
ROLES = ("admin", "annotator")

users_app = typer.Typer(help="Accounts of the annotation app (admins and annotators).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for ingestion and the REST API.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
@handle_errors
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option("--role", envvar="ASSAY_USER_ROLE", help="admin or annotator.")] = "annotator",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first "
                                                 "line of stdin instead of prompting.")] = False,
) -> None:
    """Add an account (or reset its password and role); the password is hashed with Argon2id."""
    from assay._web.auth import add_user

    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: use admin or annotator")
    account = add_user(get_ctx(ctx).store, name, _read_password(password_stdin),
                       "admin" if role == "admin" else "annotator")
    console.print(f"user {account.name} ({account.role}) saved")


@users_app.command("list")
@handle_errors
def users_list(ctx: typer.Context) -> None:
    """List accounts and roles."""
    from assay._web.auth import list_users

    for account in list_users(get_ctx(ctx).store):
        console.print(f"{account.name}\t{account.role}")


@keys_app.command("create")
@handle_errors
def keys_create(
    ctx: typer.Context,
    owner: Annotated[str, typer.Option("--owner", help="Who or what uses the key (a note).")] = "",
    env: Annotated[str | None, typer.Option("--env", help="Bind the key to an environment: traces sent with it "
                                            "whose resource names no deployment.environment.name get this one "
                                            "(e.g. a key for the evaluation harness: --env evaluation).",
                                            show_default=False)] = None,
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from assay._web.auth import create_api_key

    key = create_api_key(get_ctx(ctx).store, owner, env)
    err_console.print("store this key now: it cannot be shown again")
    print(key)


@keys_app.command("list")
@handle_errors
def keys_list(ctx: typer.Context) -> None:
    """List API keys: prefix, owner, created and revoked times (UTC). Keys themselves are never stored."""
    from assay._web.auth import list_api_keys

    keys = list_api_keys(get_ctx(ctx).store)
    if not keys:
        console.print("no API key (create one with `assay keys create`)")
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        console.print(f"{k.prefix}\t{k.owner or '-'}\tenv {k.env or '-'}\tcreated {k.created_at:%Y-%m-%d %H:%M}"
                      f"\t{state}",
                      markup=False, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The key, or at least its first 8 characters "
                                                "(as `assay keys list` shows them).")],
) -> None:
    """Revoke an API key: requests with it get 401 from now on (running servers included)."""
    from assay._web.auth import revoke_api_key

    revoke_api_key(get_ctx(ctx).store, prefix)
    console.print(f"revoked the key starting {prefix[:12]}", markup=False)
