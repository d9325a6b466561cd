"""Every CDA variant the bridge produces passes the CI-SIS conformance kit (XSD + StrucMin).

The kit lives in ``shared/conformance/`` beside the repository. It is required: a missing kit
fails this test. All variants go through one validator run (Saxon loads the schematron once).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from mssbridge.cda.document import build_cda
from mssbridge.cda.model import (
    TELEMEDICINE_REPORT,
    Author,
    Organisation,
    OrgIdType,
    Patient,
    Sex,
)
from mssbridge.cda.sample import DOCTOR, NURSE, sample_request
from mssbridge.cda.transcript import find_fonts, render_transcript

KIT = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "validate-cda"


def variants() -> dict[str, bytes]:
    fonts = find_fonts()
    base = sample_request(6)
    local_patient = Patient(
        "IPP-000123",
        "1.2.250.1.999.1.1.3",
        "DUPONT",
        ("Luc", "Marie"),
        date(1950, 5, 6),
        Sex.MALE,
    )
    requests = {
        "ins-two-authors": base,
        "ins-one-author": replace(base, authors=(DOCTOR,)),
        "no-ins-local-id": replace(base, patient=local_patient),
        "no-ins-unknown-sex-siret": replace(
            base,
            patient=replace(local_patient, sex=Sex.UNKNOWN),
            custodian=Organisation("Clinique d'Exemple", OrgIdType.SIRET, "12345678901234"),
            authors=(NURSE,),
            legal_authenticator=NURSE,
        ),
        "ins-nia-not-qualified": replace(
            base, patient=replace(base.patient, id_root="1.2.250.1.213.1.4.9", ins_qualified=False)
        ),
        "replacing-version": sample_request(6, version=2),
        "third-version": sample_request(6, version=3),
        "telemedicine-no-encounter-code": replace(
            base, document_type=TELEMEDICINE_REPORT, encounter_code=None
        ),
        "author-display-name-only": replace(
            base, authors=(Author("Équipe mobile", rpps="12345678901"),)
        ),
    }
    return {
        name: build_cda(request, render_transcript(request, fonts))
        for name, request in requests.items()
    }


def test_all_variants_pass_the_conformance_kit(tmp_path: Path) -> None:
    if not KIT.is_file():
        pytest.fail(f"CDA conformance kit not found at {KIT}: clone shared/ beside the repository")
    paths = []
    for name, data in variants().items():
        path = tmp_path / f"{name}.xml"
        path.write_bytes(data)
        paths.append(path)
    result = subprocess.run(
        [sys.executable, str(KIT), "-q", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"validate-cda failed:\n{result.stdout}\n{result.stderr}"
    assert f"{len(paths)} passed, 0 failed" in result.stdout
