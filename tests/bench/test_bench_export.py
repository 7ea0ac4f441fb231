"""The export benchmark at a tiny size: it loads the log, exports it over HTTP and
under tracemalloc, and reports every figure (its timings are the benchmark's to
judge, not this test's)."""

from __future__ import annotations

from bench import export


def test_export_benchmark_exports_every_row_and_reports_memory() -> None:
    report = export.run(export.parse_args(["--interactions", "1200", "--users", "40",
                                           "--items", "30"]))
    names = [f.name for f in report.figures]
    assert len(names) == 4 and names[0].startswith("load (1,200 interactions")
    assert report.figures[1].measured.startswith("1,200 lines") and report.figures[1].ok
    assert "tracemalloc" in names[3] and report.figures[3].ok
