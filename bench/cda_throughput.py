"""Benchmark: documents per second for PDF transcript + CDA + IHE_XDM.ZIP (prints a table).

For threads of 5, 50 and 200 messages (``mssbridge.cda.sample``), builds ``--count`` packages
with ``build_package`` one after the other in this process (one core), then the same number
with a process pool of ``os.cpu_count()`` workers (allowed on every CPU, even under
``taskset``). Each line gives
documents per second, milliseconds per document (median and 95th percentile), and the sizes of
the PDF and of the ZIP. Fonts are parsed before timing starts (once per process, as in the
daemon); the first, cold document is reported on its own.

Pin it for steadier figures; the other processes of the machine still count:

    taskset -c 1 .venv/bin/python bench/cda_throughput.py [--count 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from mssbridge.cda.model import DocumentRequest
from mssbridge.cda.package import build_package
from mssbridge.cda.sample import SAMPLE_NIL, sample_request, sample_submission
from mssbridge.cda.transcript import TranscriptFonts, find_fonts

SIZES = (5, 50, 200)


@dataclass(frozen=True)
class Result:
    label: str
    docs: int
    seconds: float  # wall clock for all documents
    per_doc: list[float]  # seconds, each document
    pdf_size: int
    zip_size: int

    def row(self) -> str:
        ms = sorted(value * 1000 for value in self.per_doc)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        return (
            f"{self.label:<26} {self.docs:>5} {self.docs / self.seconds:>9.1f}"
            f" {statistics.median(ms):>9.2f} {p95:>9.2f}"
            f" {self.pdf_size / 1000:>8.1f} {self.zip_size / 1000:>8.1f}"
        )


def build_new(request: DocumentRequest, fonts: TranscriptFonts | None) -> tuple[int, int]:
    package = build_package(request, sample_submission(request), fonts, SAMPLE_NIL)
    return len(package.pdf), len(package.xdm_zip)


def run_serial(
    label: str,
    build: Callable[[DocumentRequest, TranscriptFonts | None], tuple[int, int]],
    request: DocumentRequest,
    fonts: TranscriptFonts | None,
    count: int,
) -> Result:
    per_doc = []
    sizes = (0, 0)
    start = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        sizes = build(request, fonts)
        per_doc.append(time.perf_counter() - began)
    return Result(label, count, time.perf_counter() - start, per_doc, *sizes)


def _pool_start() -> None:
    if hasattr(os, "sched_setaffinity"):  # undo a `taskset` given for the one-core lines
        with contextlib.suppress(OSError):  # some CPUs may be off limits (cgroup cpuset)
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
    fonts = find_fonts()
    build_new(sample_request(1), fonts)  # parse the fonts once in each worker


def _pool_job(messages: int) -> tuple[float, int, int]:
    request = sample_request(messages)
    began = time.perf_counter()
    pdf_size, zip_size = build_new(request, find_fonts())
    return time.perf_counter() - began, pdf_size, zip_size


def run_pool(messages: int, count: int, workers: int) -> Result:
    with ProcessPoolExecutor(max_workers=workers, initializer=_pool_start) as pool:
        list(pool.map(_pool_job, [1] * workers))  # every worker started and warm
        start = time.perf_counter()
        results = list(pool.map(_pool_job, [messages] * count, chunksize=4))
        seconds = time.perf_counter() - start
    _, pdf_size, zip_size = results[-1]
    return Result(
        f"pool of {workers} processes",  # on all CPUs
        count,
        seconds,
        [elapsed for elapsed, _, _ in results],
        pdf_size,
        zip_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="documents per line")
    parser.add_argument("--no-pool", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()

    fonts = find_fonts()
    workers = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else workers
    print(
        f"Python {sys.version.split()[0]}, fonts: {'DejaVu embedded' if fonts else 'core'},"
        f" {workers} CPUs, {allowed} allowed to this process"
    )
    header = (
        f"{'':<26} {'docs':>5} {'docs/s':>9} {'ms p50':>9} {'ms p95':>9}"
        f" {'PDF kB':>8} {'ZIP kB':>8}"
    )
    for messages in args.sizes:
        request = sample_request(messages)
        began = time.perf_counter()
        build_new(request, fonts)  # cold: parses the fonts if not done yet
        cold = (time.perf_counter() - began) * 1000
        print(f"\n{messages} messages (first document, cold: {cold:.1f} ms)")
        print(header)
        new = run_serial("one core", build_new, request, fonts, args.count)
        print(new.row(), flush=True)
        if not args.no_pool:
            print(run_pool(messages, args.count, workers).row(), flush=True)
        print(run_serial("one core, core fonts", build_new, request, None, args.count).row())


if __name__ == "__main__":
    main()
