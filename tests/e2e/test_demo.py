"""``mssbridge demo``, the README's first command: it finishes and shows the CDA package."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssbridge.lab.demo import run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_demo_relays_a_chat_message_with_its_health_document_and_the_reply(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    run_demo(tmp_path / "demo", say=lines.append)
    output = "\n".join(lines)
    assert "X-MSS-NIL: MSSBRIDGE-LAB" in output and "X-MSS-INS: O" in output
    assert output.count("attachment IHE_XDM.ZIP (application/zip") == 2
    assert output.count("in the archive: IHE_XDM/SUBSET01/DOC0001.XML: CDA R2") == 2
    assert "attachment ECG.pdf" in output
    assert "[m.text] ECG vu : rien d'alarmant" in output
    assert lines[-1].startswith("Done in ")
