"""Shared driver of the fuzz targets: atheris (libFuzzer) when installed, else a mutation loop.

A target module defines ``check(data: bytes) -> None``, which raises only when the product code
misbehaves (an undocumented exception or a broken invariant), and calls :func:`main`.

With atheris, the usual libFuzzer flags apply (``-atheris_runs=N``, ``-max_total_time=S``,
``-timeout=S``, ``-max_len=B``, corpus directories as arguments). Without a corpus directory the
seeds of ``tests/hostile/hostile_corpus.py`` are written to a temporary one first. Without
atheris (or with ``--no-atheris``) the same flags ``-atheris_runs`` / ``-max_total_time`` /
``-seed`` drive a plain loop of byte mutations of those seeds.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hostile"))

Check = Callable[[bytes], None]


def _use_atheris() -> bool:
    if "--no-atheris" in sys.argv or os.environ.get("MSSBRIDGE_FUZZ_NO_ATHERIS"):
        return False
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def instrumented(*packages: str) -> Iterator[None]:
    """Import the code under test inside this block: atheris then traces its branches."""
    if not _use_atheris():
        yield
        return
    import atheris

    with atheris.instrument_imports(include=list(packages)):
        yield


def _flag(argv: Sequence[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return int(arg.split("=", 1)[1])
    return default


def _seed_directory(seeds: Sequence[bytes]) -> str:
    directory = tempfile.mkdtemp(prefix="mssbridge-fuzz-seeds-")
    for index, seed in enumerate(seeds):
        Path(directory, f"seed-{index:04d}").write_bytes(seed)
    return directory


def _run_atheris(check: Check, seeds: Sequence[bytes], argv: list[str]) -> None:
    import atheris

    if not any(not arg.startswith("-") for arg in argv[1:]):
        argv = [*argv, _seed_directory(seeds)]
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.append(f"-max_len={max(4096, max(len(seed) for seed in seeds))}")
    if not any(arg.startswith("-timeout=") for arg in argv):
        argv.append("-timeout=10")  # a hang is a finding, like a crash
    atheris.Setup(argv, check)
    atheris.Fuzz()


def _run_loop(check: Check, seeds: Sequence[bytes], argv: list[str]) -> None:
    from hostile_corpus import mutate

    runs = _flag(argv, "atheris_runs", 10_000)
    seconds = _flag(argv, "max_total_time", 0)
    rng = random.Random(_flag(argv, "seed", 1))
    start = time.monotonic()
    inputs = [*seeds]
    for count in range(runs):
        data = inputs[count] if count < len(inputs) else mutate(rng.choice(inputs), rng)
        began = time.monotonic()
        try:
            check(data)
        except Exception:
            crash = Path(f"crash-{count:06d}")
            crash.write_bytes(data)
            traceback.print_exc()
            print(f"crash input written to {crash}", file=sys.stderr)
            raise SystemExit(1) from None
        if time.monotonic() - began > 10:
            Path(f"timeout-{count:06d}").write_bytes(data)
            raise SystemExit(f"input {count} took more than 10 s")
        if count >= len(seeds) and len(inputs) < 2000 and rng.random() < 0.05:
            inputs.append(data)  # keep a few mutants to mutate further
        if seconds and time.monotonic() - start > seconds:
            break
    print(f"Done {count + 1} runs in {time.monotonic() - start:.1f} s (mutation loop)")


def main(check: Check, seeds: Sequence[bytes]) -> None:
    argv = [arg for arg in sys.argv if arg != "--no-atheris"]
    if _use_atheris():
        _run_atheris(check, seeds, argv)
    else:
        _run_loop(check, seeds, argv)
