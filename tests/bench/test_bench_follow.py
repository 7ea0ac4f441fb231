"""The follow benchmark at a tiny size: every new version made active in the store
is served by the replica, with no failed request, and the lists bounded by the
capacity are completed (its timings are the benchmark's to judge)."""

from __future__ import annotations

from bench import follow


def test_follow_benchmark_serves_each_version_and_completes_the_bounded_lists() -> None:
    report = follow.run(follow.parse_args([
        "--users", "300", "--items", "500", "--dim", "8", "--active", "40",
        "--capacity", "200", "--versions", "2", "--window", "1", "--connections", "2",
        "--timeout", "600", "--tool", "python",
    ]))
    names = [f.name for f in report.figures]
    assert "first version: lists of 200 users complete after start-up" in names
    versions = [f for f in report.figures if f.name.startswith("version ")]
    assert [f.name.split(":")[0] for f in versions] == ["version 2", "version 3"]
    for figure in versions:
        assert " 0 errors" in figure.measured and "lists complete after" in figure.measured, \
            figure
        assert "not within" not in figure.measured, figure
