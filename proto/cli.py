"""How every typer program here ends a usage error: one ``prog: …`` line on stderr and exit 2,
not click's framed help box (a script reading stderr, or an operator, gets one line)."""

from __future__ import annotations

import sys
from typing import Any

import typer

USAGE_ERROR = typer.BadParameter.__mro__[1]  # click's UsageError, as vendored by typer


def run_app(app: typer.Typer, prog: str, argv: list[str] | None = None) -> None:
    """Run ``app`` as the program ``prog``; a usage error says where (``prog sub: …``) and
    which help to read; Ctrl-C is one line and exit 130."""
    try:
        code: Any = app(args=argv, prog_name=prog, standalone_mode=False)
    except USAGE_ERROR as e:
        path = e.ctx.command_path if getattr(e, "ctx", None) else ""
        sub = path.removeprefix(prog).strip()  # "firmware add", or "" for the program itself
        where = f"{sub}: " if sub else ""
        hint = f" (see `{path} --help`)" if path else ""
        message = " ".join(e.format_message().split())
        if not message:  # no arguments at all: the help is already printed
            sys.exit(2)
        print(f"{prog}: {where}{message}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
