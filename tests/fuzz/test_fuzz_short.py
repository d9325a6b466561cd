"""A short run of each fuzz target in a subprocess: it must finish cleanly (exit 0).

Long runs are described in docs/testing.md. With atheris installed the run is coverage-guided
(libFuzzer); without it the targets fall back to a seeded mutation loop, and so does this test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).resolve().parent
RUNS = {"fuzz_mime.py": 400, "fuzz_xdm.py": 2000}
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.parametrize("target", sorted(RUNS))
@pytest.mark.parametrize("engine", ["atheris", "loop"])
def test_fuzz_target_short_run(target: str, engine: str, tmp_path: Path) -> None:
    if engine == "atheris" and not HAS_ATHERIS:
        pytest.skip("atheris is not installed: the mutation loop runs instead")
    args = [sys.executable, str(HERE / target), f"-atheris_runs={RUNS[target]}", "-seed=1"]
    if engine == "loop":
        args.append("--no-atheris")
    else:
        args.append(f"-artifact_prefix={tmp_path}/")
    # The target writes its seeds (from tests/hostile) to a directory under TMPDIR.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("MSSBRIDGE_FUZZ_NO_ATHERIS", None)
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Done" in output
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
