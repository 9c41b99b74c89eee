"""Command-line mistakes exit 2 with one readable line naming the option, as mlengine's own
input errors do (not a usage box); help still prints as help."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["versions", "create", "v1", "--model", "m", "--min-nodes", "x"],
            "ERROR: Invalid value for '--min-nodes'",
        ),
        (["versions", "create", "v1"], "ERROR: Missing option '--model'."),
        (["models", "list", "--bogus"], "ERROR: No such option: --bogus"),
        (["nosuch"], "ERROR: No such command 'nosuch'."),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(run_cli: Run, args: list[str], expected: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "--help)" in lines[0]  # points to the command's help
    assert result.stdout == ""


def test_help_still_prints(run_cli: Run) -> None:
    shown = run_cli("models", "--help")
    assert shown.returncode == 0 and "Create and manage models." in shown.stdout
    bare = run_cli("models")  # a group without a command shows its help
    assert bare.returncode == 2 and "Usage: mlengine models" in bare.stdout
    assert bare.stderr == ""
