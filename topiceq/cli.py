"""The `topiceq` console script: one sub-command per module in `topiceq.commands`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Modules are
imported to build `--help`, so they keep heavy imports (torch, gensim, prefect) inside `run`; arguments that
several commands share come from `topiceq.arguments`. Every module listed in COMMANDS must exist: a missing
one is an installation error, reported as such, never a command silently left out.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# (command name, module); order is the order shown in --help.
COMMANDS: list[tuple[str, str]] = [
    ("ingest", "topiceq.commands.ingest"),
    ("compile-check", "topiceq.commands.compile_check"),
    ("topics", "topiceq.commands.topics"),
    ("train", "topiceq.commands.train"),
    ("sample", "topiceq.commands.sample"),
    ("score", "topiceq.commands.score"),
    ("generate", "topiceq.commands.generate"),
    ("evaluate", "topiceq.commands.evaluate"),
    ("quiz", "topiceq.commands.quiz"),
    ("run", "topiceq.commands.run"),
]


class UsageError(Exception):
    """An error whose message tells the user what to do; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topiceq",
        description="Topic-conditioned LaTeX equation generation: ingest papers, fit topics, train, "
        "generate, compile-check, quiz.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                raise RuntimeError(f"topiceq {name}: its module {module_name} is missing from this installation "
                                   "(reinstall topiceq: pip install -e .)") from exc
            raise
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except RuntimeError as exc:
        print(f"topiceq: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("topiceq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the reader went away: not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (UsageError, FileNotFoundError, NotADirectoryError, ValueError, RuntimeError) as exc:
        if os.environ.get("TOPICEQ_DEBUG"):
            raise
        print(f"topiceq {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
