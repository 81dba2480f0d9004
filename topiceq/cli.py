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

from topiceq.inputs import UsageError, validate

# (command name, module); order is the order shown in --help.
COMMANDS: list[tuple[str, str]] = [
    ("ingest", "topiceq.commands.ingest"),
    ("download", "topiceq.commands.download"),
    ("compile-check", "topiceq.commands.compile_check"),
    ("topics", "topiceq.commands.topics"),
    ("train", "topiceq.commands.train"),
    ("sample", "topiceq.commands.sample"),
    ("score", "topiceq.commands.score"),
    ("generate", "topiceq.commands.generate"),
    ("evaluate", "topiceq.commands.evaluate"),
    ("quiz", "topiceq.commands.quiz"),
    ("hmm", "topiceq.commands.hmm"),
    ("neurons", "topiceq.commands.neurons"),
    ("run", "topiceq.commands.run"),
]


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
        validate(args.command, args)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("topiceq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the reader went away: not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (UsageError, OSError, ValueError, RuntimeError) as exc:
        if os.environ.get("TOPICEQ_DEBUG"):
            raise
        print(f"topiceq {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except Exception as exc:  # a bug, not bad input: still one line, with the way to the traceback
        if os.environ.get("TOPICEQ_DEBUG"):
            raise
        print(f"topiceq {args.command}: error: unexpected {type(exc).__name__}: {one_line(exc)} (a bug: run "
              "again with TOPICEQ_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """The message on one line (some libraries' messages run over many)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
