"""``fangwire channels ...``: manage the channels of a running daemon through its API.

``list``                         every channel with its status
``configure NAME KEY=VALUE...``  set settings (``KEY=-`` reads the value from a hidden prompt
                                 or stdin, so secrets stay out of the shell history)
``test NAME [TARGET]``           send a real test message
``remove NAME``                  stop the channel and delete its settings and secrets
``reload``                       re-read config.toml and apply only what changed

The daemon is found at ``--url`` (default: ``api_listen`` from config.toml) and authenticated
with ``FANGWIRE_API_KEY`` when set. Exit status: 0 done, 1 the daemon refused (its message is
printed), 3 the daemon could not be reached.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from typing import Any

import httpx

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


def add_parser(commands: Any) -> None:
    channels = commands.add_parser("channels", help="manage channels of the running daemon")
    channels.add_argument("--url", help="daemon base URL (default from api_listen)")
    sub = channels.add_subparsers(dest="channels_command", required=True)
    sub.add_parser("list", help="list channels and their status")
    configure = sub.add_parser("configure", help="set a channel's settings and start it")
    configure.add_argument("name")
    configure.add_argument("values", nargs="+", metavar="KEY=VALUE")
    test = sub.add_parser("test", help="send a real test message")
    test.add_argument("name")
    test.add_argument("target", nargs="?")
    remove = sub.add_parser("remove", help="remove a channel's settings and secrets")
    remove.add_argument("name")
    sub.add_parser("reload", help="re-read config.toml and apply what changed")


def _default_url() -> str:
    from fangwire.config import make_converter, parse_listen
    from fangwire.configfile import ConfigFile
    from fangwire.home import CONFIG_FILE_NAME, resolve_home

    path = resolve_home() / CONFIG_FILE_NAME
    config = ConfigFile(path, make_converter()).load()
    host, port = parse_listen(config.api_listen)
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def _values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"fangwire: expected KEY=VALUE, got {pair!r}")
        if value == "-":
            value = (
                getpass.getpass(f"{key}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
            )
        values[key] = value
    return values


def _table(items: list[Mapping[str, Any]]) -> None:
    header = ("NAME", "STATUS", "CONFIGURED", "TOKEN", "AGENT", "MSGS/24H")
    rows = [
        (
            i["name"],
            i["status"],
            "yes" if i["configured"] else "no",
            "yes" if i["has_token"] else "no",
            i.get("agent") or "-",
            str(i.get("msgs_24h", 0)),
        )
        for i in items
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())


def run(args: argparse.Namespace) -> int:
    url = args.url or _default_url()
    headers = {}
    if key := os.environ.get("FANGWIRE_API_KEY"):
        headers["authorization"] = f"Bearer {key.splitlines()[0].strip()}"
    command = args.channels_command
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60.0) as http:
            if command == "list":
                response = http.get("/api/channels")
            elif command == "configure":
                response = http.post(
                    f"/api/channels/{args.name}/configure",
                    json={"fields": _values(args.values)},
                )
            elif command == "test":
                body = {"target": args.target} if args.target else None
                response = http.post(f"/api/channels/{args.name}/test", json=body)
            elif command == "remove":
                response = http.delete(f"/api/channels/{args.name}/configure")
            else:
                response = http.post("/api/channels/reload")
    except httpx.TransportError as exc:
        print(f"fangwire: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        message = (data.get("error") or {}).get("message") or response.reason_phrase
        print(f"fangwire: {message} (HTTP {response.status_code})", file=sys.stderr)
        return EXIT_REFUSED
    if command == "list":
        _table(data["channels"])
    elif command == "configure":
        print(data["note"])
    elif command == "test":
        print(data["message"])
    elif command == "remove":
        print(f"removed {args.name} ({data['secrets_deleted']} secrets deleted)")
    else:
        for key in ("started", "stopped", "restarted"):
            if data[key]:
                print(f"{key}: {', '.join(data[key])}")
        for name, problem in data["errors"].items():
            print(f"error: {name}: {problem}")
    return 0
