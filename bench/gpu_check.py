"""The GPU check, one command on a machine with a CUDA GPU: ``python -m bench.gpu_check``.

1. the device tests (``tests/sml/test_device.py``), which skip without a GPU, must
   all run and pass here;
2. one boundary of SML, full-retrain and fine-tune after growing histories
   (``bench.retrain_cost``), on the CPU and on the GPU, wall-clock seconds and the
   GPU's speed-up.

Exit status 1 without a CUDA device (nothing was checked), else pytest's status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from bench.retrain_cost import STRATEGIES, measure
from sml import hyperparameters as hp
from sml.device import resolve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", default="100000,1000000",
                        help="history lengths, in interactions")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of the CPU runs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available to PyTorch here: nothing checked")
        return 1
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "tests/sml/test_device.py"], check=False
    )
    if tests.returncode != 0:
        return tests.returncode
    torch.set_num_threads(args.threads)
    methods = {name: hp.for_method(name) for name in STRATEGIES}
    measure(10_000, methods, device=resolve("cuda"))  # CUDA's start-up, not timed below
    print(f"{'history':>10} {'method':>14} {'cpu wall s':>11} {'cuda wall s':>12} {'speed-up':>9}")
    for history in (int(x) for x in args.history.split(",")):
        on_cpu = measure(history, methods, device="cpu")
        on_gpu = measure(history, methods, device=resolve("cuda"))
        for name in STRATEGIES:
            cpu_s, gpu_s = on_cpu[name]["wall_s"], on_gpu[name]["wall_s"]
            print(f"{history:>10,} {name:>14} {cpu_s:>11.3f} {gpu_s:>12.3f} {cpu_s / gpu_s:>9.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
