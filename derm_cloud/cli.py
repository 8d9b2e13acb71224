"""The `derm-cloud` command.

Each sub-command lives in its own module under `derm_cloud/commands/` and exposes
`register(subparsers)`; this file only discovers them, so adding a command never touches the others.
Handlers import their heavy dependencies when they run, so `derm-cloud --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

from derm_cloud import __version__
from derm_cloud.errors import DermCloudError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derm-cloud",
        description=(
            "Compare skin-lesion classifiers across local models and cloud services. "
            "For triage and research: a clinician reviews every result; nothing here is a diagnosis."
        ),
    )
    parser.add_argument("--version", action="version", version=f"derm-cloud {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import derm_cloud.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"derm_cloud.commands.{info.name}")
        module.register(sub)
    return parser


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as one `derm-cloud: warning: ...` line on stderr.

    Python's default format names a file and line (for a console script, the script's own `sys.exit(main())`)
    and reads like a crash; a command-line user needs the message only.
    """
    from derm_cloud.redaction import redact

    text = redact(" ".join(str(message).split()), limit=None)
    print(f"derm-cloud: warning: {text}", file=sys.stderr if file is None else file, flush=True)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    # Restored afterwards: main() is also called in-process (tests, notebooks), whose warning capture must win.
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    with _warnings_as_lines():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        if args.command is None and hasattr(args, "default_handler"):
            return int(args.default_handler(args))
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except DermCloudError as exc:
        # Our errors carry an actionable message; a traceback would only hide it. The message was redacted when
        # the error was made; the cause (an SDK's exception, which may quote the endpoint URL) is not printed.
        print(f"derm-cloud: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("derm-cloud: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A bug or an SDK error no backend translated: the traceback is what a bug report needs, but Python's
        # own would print every exception of the chain verbatim, endpoint URLs and keys included.
        from derm_cloud.redaction import format_exception

        print(format_exception(exc), end="", file=sys.stderr)
        print(
            f"derm-cloud: unexpected {type(exc).__name__} (a bug: please report it with the text above)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
