"""Mutation testing of one module at a time (mutmut 3).

    python tests/mutation/run.py TARGET [TARGET ...]      (or: make mutants)

Each target is a module of the product with the test files that exercise it
(TARGETS below): the repository is copied to $MUTATION_DIR/<target>/ (default:
under the system's temporary directory), a ``[tool.mutmut]`` section naming
that one module and those test files is added to the copy's pyproject.toml,
and mutmut runs there, so targets never share a ``mutants/`` directory and each
runs only its own tests. The per-target summary (killed, survived, ...) is
printed and written to <target>/summary.json; the survivors are listed with
``mutmut results`` in that directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# outside the repository (mutmut writes a mutants/ tree and a cache per target)
WORK = Path(os.environ.get("MUTATION_DIR", Path(tempfile.gettempdir()) / "smlrec-mutation"))
PACKAGES = ["sml", "store", "engine", "service", "worker", "smlrec", "bench", "migrations"]

TARGETS: dict[str, tuple[str, list[str]]] = {
    "transfer": ("sml/transfer.py", [
        "tests/sml/test_transfer.py",
        "tests/sml/test_trainer.py::test_an_untrained_transfer_serves_w_hat_at_every_merge",
        "tests/sml/test_trainer.py::test_a_merge_adds_the_learned_correction_to_w_hat",
        "tests/sml/test_trainer.py::test_a_frozen_transfer_serves_what_fine_tuning_serves",
    ]),
    "trainer": ("sml/trainer.py", ["tests/sml/test_trainer.py"]),
    "periods": ("worker/periods.py", ["tests/worker/test_periods.py",
                                      "tests/worker/test_ops_time.py",
                                      "tests/store/test_store_periods.py"]),
    "repository": ("store/repository.py", ["tests/store"]),
    # split out of store/repository.py after its figures in REPORT.md were measured
    "store_periods": ("store/_periods.py", ["tests/store"]),
    "store_reads": ("store/_reads.py", ["tests/store"]),
    "recommender": ("engine/recommender.py", [
        *(f"tests/engine/test_{name}.py" for name in ("recommender_paths", "ranked", "quantized")),
        *(f"tests/service/test_{name}.py" for name in (
            "recommendations", "serving_paths", "fastpath", "ops", "swap", "distributed",
            "end_to_end"))]),
    "scorer": ("engine/scorer.py", [
        *(f"tests/engine/test_{name}.py" for name in ("scorer", "batching", "quantized")),
        *(f"tests/service/test_{name}.py" for name in ("recommendations", "fastpath"))]),
}


def _copy(target: str) -> Path:
    root = WORK / target
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in [*PACKAGES, "tests"]:
        shutil.copytree(REPO / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / name)
    return root


def run(target: str) -> dict[str, int]:
    module, tests = TARGETS[target]
    root = _copy(target)
    section = (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps(PACKAGES[:6])}\n"
        f"only_mutate = {json.dumps([module])}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
    )
    with open(root / "pyproject.toml", "a") as out:
        out.write(section)
    mutmut = Path(sys.executable).with_name("mutmut")
    # one thread per process: mutmut forks a child per mutant, and an OpenMP pool
    # inherited through fork can stall it until the mutant times out
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([str(mutmut), "run", "--max-children", os.environ.get("MUTANT_JOBS", "2")],
                   cwd=root, env=env, check=False)
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=root, env=env,
                             capture_output=True, text=True, check=False).stdout
    counts: dict[str, int] = {}
    for line in results.splitlines():
        if ":" in line:
            status = line.rsplit(":", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    (root / "results.txt").write_text(results)
    (root / "summary.json").write_text(json.dumps({"module": module, **counts}, indent=1))
    return counts


def main(argv: list[str]) -> int:
    for target in argv or list(TARGETS):
        counts = run(target)
        killed = counts.get("killed", 0)
        total = sum(counts.values())
        score = f"{100 * killed / total:.1f}%" if total else "n/a"
        print(f"{target} ({TARGETS[target][0]}): {counts} -> killed {score}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
