"""``membershield guard`` and ``keys``: serve a model behind the guard; manage its API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from membershield.cli.common import console


def guard(
    model: Annotated[
        str | None,
        typer.Option(
            help="Fitted .joblib/.pkl classifier (with --upstream: checks shapes) or language model directory."
        ),
    ] = None,
    upstream: Annotated[
        str | None, typer.Option(help="JSON endpoint to forward to instead of scoring locally (same shapes).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help=r"Guard policy TOML: sections \[output], \[limits], \[detector], \[server], \[generation]."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (keys, requests and alerts go there too).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model name in the history (default: the model file's stem).")
    ] = None,
    text: Annotated[
        bool, typer.Option(help="The --upstream generates text: serve POST /v1/generate with PII redaction.")
    ] = False,
) -> None:
    """Serve a model behind API keys, output hardening, rate limits, probing detection and PII redaction.

    A fitted classifier file serves POST /v1/predict.

    A causal language model directory (written by save_pretrained) serves POST /v1/generate."""
    from membershield.guard.app import create_app, guard_config
    from membershield.guard.policy import load_policy
    from membershield.guard.serve import bind, serve, url

    config = guard_config(model, upstream, load_policy(policy), store=store, model_name=model_name, text=text)
    sock = bind(host, port)
    try:
        application = create_app(config)
    except BaseException:
        sock.close()
        raise
    console.print(f"guarding '{config.model_name}' on {url(host, sock)} (dashboard: /?key=ADMIN_KEY)", markup=False)
    serve(application, sock)


keys_app = typer.Typer(help="API keys of the guard service.", no_args_is_help=True)


StoreOption = Annotated[str | None, typer.Option(help="History database, a file or URL.")]


def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for (unique).")],
    admin: Annotated[bool, typer.Option(help="May read alerts and the dashboard.")] = False,
    owner: Annotated[
        str | None, typer.Option(help="Who answers for the key (a person or team); incident reports name it.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Create an API key and print it once; only its sha256 is stored."""
    from membershield.guard.keys import issue_key
    from membershield.store import open_store

    with open_store(store) as opened:
        token = issue_key(opened, name, admin=admin, owner=owner)
    typer.echo(token)


def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    store: StoreOption = None,
) -> None:
    """Revoke a key (and any key a rotation replaced): running guards refuse it within a second."""
    from membershield.guard.key_lifecycle import revoke_key
    from membershield.store import open_store

    with open_store(store) as opened:
        key = revoke_key(opened, name)
    assert key.revoked_at is not None
    console.print(f"revoked '{key.name}' at {key.revoked_at.isoformat(timespec='seconds')}", markup=False)


def keys_rotate(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    grace: Annotated[
        str, typer.Option(help="How long the replaced key keeps working: 0s, 15m, 1h, 7d (clients switch over).")
    ] = "1h",
    store: StoreOption = None,
) -> None:
    """Give a key a new secret and print it once; the replaced one works until the grace period ends."""
    from membershield.guard.key_lifecycle import parse_grace, rotate_key
    from membershield.store import open_store

    period = parse_grace(grace)
    with open_store(store) as opened:
        token, until = rotate_key(opened, name, period)
    typer.echo(token)
    typer.echo(f"the replaced key of '{name}' works until {until.isoformat(timespec='seconds')}", err=True)


def keys_list(store: StoreOption = None) -> None:
    """One tab-separated line per key: name, role, owner, created, last used (UTC) and state (active, revoked,
    rotated with the end of the old key's grace period); never the keys themselves."""
    from datetime import UTC, datetime

    from membershield.guard.key_lifecycle import key_statuses
    from membershield.store import open_store

    with open_store(store) as opened:
        statuses = key_statuses(opened)
    now = datetime.now(UTC)
    for status in statuses:
        typer.echo("\t".join(status.row(now)))


keys_app.command("create")(keys_create)
keys_app.command("list")(keys_list)
keys_app.command("revoke")(keys_revoke)
keys_app.command("rotate")(keys_rotate)
