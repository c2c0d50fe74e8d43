"""The ``fangwire`` command line.

``fangwire serve [--host H] [--port P]``  run the daemon (creates config.toml when missing)
``fangwire init [--force]``              write a commented config.toml with safe defaults
``fangwire version``                     print the version
``fangwire plugins [--json]``            list plugins as ``/-/plugins`` does
``fangwire channels ...``                manage channels of the running daemon (see
                                         :mod:`fangwire.cli_channels`)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fangwire import __version__, cli_channels
from fangwire.config import ConfigError, is_loopback_host, parse_listen
from fangwire.configfile import atomic_write_text, default_config_text
from fangwire.home import CONFIG_FILE_NAME, ensure_home, resolve_home

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fangwire", description="Communication and network daemon for AI agents."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--host", help="address to bind (default from api_listen: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from api_listen: 4545)")
    init = commands.add_parser("init", help="write a commented config.toml with safe defaults")
    init.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    commands.add_parser("version", help="print the version")
    plugins = commands.add_parser("plugins", help="list installed plugins and their status")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cli_channels.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"fangwire {__version__}")
            return 0
        if args.command == "init":
            return _init(force=args.force)
        if args.command == "plugins":
            return _plugins(as_json=args.json)
        if args.command == "channels":
            return cli_channels.run(args)
        return _serve(args.host, args.port)
    except ConfigError as exc:
        print(f"fangwire: invalid configuration\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


def _init(*, force: bool) -> int:
    home = ensure_home(resolve_home())
    path = home / CONFIG_FILE_NAME
    if path.exists() and not force:
        print(f"{path} already exists; use --force to overwrite it", file=sys.stderr)
        return 1
    atomic_write_text(path, default_config_text())
    print(f"wrote {path}")
    return 0


def _plugins(*, as_json: bool) -> int:
    from fangwire.runtime import Runtime
    from fangwire.secrets import MemoryKeyring

    runtime = Runtime.build(keyring_backend=MemoryKeyring())
    if as_json:
        print(runtime.pm.listing_json().decode("utf-8"))
        return 0
    records = sorted(runtime.pm.records.values(), key=lambda r: (r.group, r.name))
    header = ("NAME", "GROUP", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS / ERROR")
    rows = [
        (
            r.name,
            r.group,
            r.distribution or "-",
            r.version or "-",
            r.status,
            r.error if r.error else ", ".join(r.hooks),
        )
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:5])), row[5])
    return 0


def _serve(host: str | None, port: int | None) -> int:
    import uvicorn

    from fangwire.app import create_app
    from fangwire.config import make_converter
    from fangwire.configfile import ConfigFile
    from fangwire.http.server import uvicorn_config
    from fangwire.logs import configure_logging, level_number
    from fangwire.runtime import Runtime

    home = ensure_home(resolve_home())
    if ConfigFile(home / CONFIG_FILE_NAME, make_converter()).ensure_exists():
        print(
            f"fangwire: wrote default configuration to {home / CONFIG_FILE_NAME}", file=sys.stderr
        )
    runtime = Runtime.build(home)
    config_host, config_port = parse_listen(runtime.config.api_listen)
    host = host or config_host
    port = port or config_port
    app = create_app(runtime)
    if not is_loopback_host(host) and not app.state.gatekeeper.auth_configured:
        print(
            f"fangwire: refusing to listen on {host}: no API key is configured. Set api_key "
            "(or api_key_hash) in config.toml or FANGWIRE_API_KEY, or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    uninstall = configure_logging(
        runtime.config.logging.level, runtime.redactor, hub=runtime.log_hub
    )
    try:
        server = uvicorn.Server(
            uvicorn_config(
                app,
                runtime.config.http,
                host=host,
                port=port,
                # uvicorn formats the access line's arguments before the level check; skip it
                # entirely when the configured level would drop the line anyway.
                access_log=level_number(runtime.config.logging.level) <= logging.INFO,
            )
        )
        server.run()
    finally:
        uninstall()
    return 0 if server.started else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
