"""The command line's exit codes: 0 when every identity holds, 1 when one does not, 2 for a bad
option, 130 when interrupted before the run completed."""
from __future__ import annotations

import pytest

from pipeline.local import cli
from pipeline.local.accounting import Accounting, Check


def _exit_code(monkeypatch: pytest.MonkeyPatch, outcome: object) -> int:
    def fake_run() -> Accounting:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]

    monkeypatch.setattr(cli, "run", fake_run)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)  # the test process keeps its own
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0)


BALANCED = Accounting(inputs=1, pushed=1, orders=0, dead_lettered=0, duplicates=0, dead_letter_kinds={})


def test_all_identities_hold_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _exit_code(monkeypatch, BALANCED) == 0


def test_a_folder_that_differs_exits_1_although_the_inputs_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    differs = Accounting(**{**BALANCED.__dict__, "checks": (Check("waybills/ lines = records written", 3, 4),)})
    assert differs.inputs_balanced and _exit_code(monkeypatch, differs) == 1


def test_a_bad_option_exits_2_and_an_interrupt_130(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _exit_code(monkeypatch, ValueError("--events must be > 0")) == 2
    assert _exit_code(monkeypatch, KeyboardInterrupt()) == 130
