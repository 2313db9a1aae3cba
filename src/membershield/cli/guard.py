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
        Path | None, typer.Option(help=r"Guard policy TOML: sections \[output], \[limits], \[detector], \[server].")
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

    --model takes a fitted classifier file (POST /v1/predict) or a causal language model directory written
    by save_pretrained (POST /v1/generate)."""
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


def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for (unique).")],
    admin: Annotated[bool, typer.Option(help="May read alerts and the dashboard.")] = False,
    store: Annotated[str | None, typer.Option(help="History database, a file or URL.")] = None,
) -> None:
    """Create an API key and print it once; only its sha256 is stored."""
    from membershield.guard.keys import issue_key
    from membershield.store import open_store

    with open_store(store) as opened:
        token = issue_key(opened, name, admin=admin)
    typer.echo(token)


def keys_list(store: Annotated[str | None, typer.Option(help="History database, a file or URL.")] = None) -> None:
    """Key names, roles and creation times (never the keys themselves)."""
    from membershield.store import open_store

    with open_store(store) as opened:
        for key in opened.guard_keys():
            role = "admin" if key.admin else "user"
            typer.echo(f"{key.name}\t{role}\t{key.created_at.isoformat(timespec='seconds')}")


keys_app.command("create")(keys_create)
keys_app.command("list")(keys_list)
