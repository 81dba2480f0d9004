"""The command surface: every listed sub-command exists, shared flags mean one thing everywhere."""
from __future__ import annotations

import argparse

import pytest

from topiceq import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_a_listed_command_without_its_module_fails_loudly(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [("nonesuch", "topiceq.commands.nonesuch")])
    assert cli.main(["--help"]) == 1
    err = capsys.readouterr().err
    assert "nonesuch" in err and "missing" in err and len(err.strip().splitlines()) == 1


def test_shared_flags_have_one_spelling_and_one_meaning():
    commands = _subparsers(cli.build_parser())
    assert set(commands) == {name for name, _ in cli.COMMANDS}
    seen: dict[str, tuple] = {}
    for name, parser in commands.items():
        for action in parser._actions:
            for flag in ("--checkpoint", "--device", "--topic", "--theta"):
                if flag in action.option_strings:
                    key = (tuple(action.choices or ()), action.default if flag != "--checkpoint" else None,
                           action.help.split("(")[0] if flag in ("--checkpoint", "--topic") else "")
                    seen.setdefault(flag, key)
                    assert seen[flag] == key, (name, flag)
    for name in ("train", "sample", "score", "generate", "evaluate", "quiz", "run"):  # every model-running command
        assert any("--device" in a.option_strings for a in commands[name]._actions), name
    for name in ("sample", "score", "generate"):
        assert any("--topic" in a.option_strings for a in commands[name]._actions), name


@pytest.mark.parametrize("command", [name for name, _ in cli.COMMANDS])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: topiceq" in capsys.readouterr().out
