"""The `etude` console script: every verb of the CLI contract is there, and user mistakes are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from etude.cli import build_parser, main

CONTRACT_VERBS = {"generate", "fit", "export", "import-recbole", "serve", "loadgen", "microbench", "local", "report"}


def test_every_contract_verb_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert set(sub.choices) == CONTRACT_VERBS  # type: ignore[arg-type]


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["deploy"])
    assert exit_.value.code == 2
    assert "invalid choice: 'deploy'" in capsys.readouterr().err


def test_help_does_not_import_the_ml_stack() -> None:
    heavy = ("torch", "numpy", "aiohttp", "pyarrow", "matplotlib", "pulumi")
    code = f"import sys, etude.cli; etude.cli.build_parser(); print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "etude", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("etude ")
