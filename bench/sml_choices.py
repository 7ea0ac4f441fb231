"""What each of SML's design choices is worth, on a log's validation periods.

Starting from one configuration (SML's defaults, or the one ``smlrec tune`` chose,
with step 1 on its own fit settings and the centre's step-2 rate), every choice is
flipped alone and SML is walked through the validation periods, as the tuner does
(no test period is trained on or scored); the choices named ``*chosen`` choose step
1's fit and step 2's rate on those periods as the replay does. For each setting it prints
validation Recall@20 and NDCG@20, on all interactions and on returning users, the
transfer's own contribution there (the served model minus the W-hat it was merged
from) and the CPU seconds of a boundary.

    python -m bench.sml_choices --dataset ml-100k --hyper hyper.json --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sml import hyperparameters as hp
from sml.metrics import aggregate
from sml.options import roles_for
from sml.readers import load_dataset
from sml.replay import pretrain, run_method
from sml.replay_data import ReplayData

# name -> (what it changes, overrides laid over the centre configuration)
CHOICES: dict[str, tuple[str, hp.Hyper]] = {
    "centre": ("the configuration every row below changes one thing of", {}),
    "frozen": ("Theta never trained (meta lr 0): SML is then fine-tuning", {"meta": {"lr": 0.0}}),
    "chosen": ("step-1 fit, window, history sample and step-2 learning rate chosen on the "
               "validation periods among their lists, as the replay does", {}),
    "window_2": ("step 1 fits W-hat on the closing period and the one before",
                 {"step_one_window": 2}),
    "one_window_chosen": ("step 1 on the closing period only, fit and rate chosen",
                          {"step_one_windows": [1]}),
    "no_history_chosen": ("step 1 without a sample of the seen pairs, fit, window and rate "
                          "chosen", {"step_one_histories": [0.0]}),
    "history_once": ("step 1's history sample drawn once and fitted in every epoch, not "
                     "drawn anew for each", {"history_draw": "once"}),
    "own_fit_chosen": ("step 1 with SML's own fit settings only, rate chosen",
                       {"step_one_fits": ["own"]}),
    "ft_fit_chosen": ("step 1 with fine-tune's fit settings only, rate chosen",
                      {"step_one_fits": ["fine_tune"]}),
    "transfer_chosen": ("W-hat fit through the transfer (the paper's step 1), fit and rate "
                        "chosen", {"step_one": "transfer"}),
    "check_chosen": ("a new Theta serves only once proven (two lineages), fit and rate chosen",
                     {"meta": {"check": True}}),
    "rounds_1_chosen": ("R = 1 round of step 2, fit and rate chosen", {"meta": {"rounds": 1}}),
    "lr/10": ("step-2 learning rate divided by 10", {}),
    "lr*10": ("step-2 learning rate times 10", {}),
    "no_check": ("every new Theta served at once (the paper), no proven lineage",
                 {"meta": {"check": False}}),
    "scope_all": ("the transfer merges every row, not only those D_t changed",
                  {"scope": "all"}),
    "raw_inputs": ("the transfer reads raw rows, not rows in units of their columns",
                   {"transfer": {"scale_inputs": False}}),
    "warm_anchor_init": ("the first meta step merges with fresh rows (noise)",
                         {"warm_anchor": "init"}),
    "keep_adam": ("Theta's Adam moments carried from boundary to boundary",
                  {"meta": {"keep_optimizer": True}}),
    "first_seen_in": ("step 2 includes users the tables do not know (scored by item biases)",
                      {"meta": {"first_seen": "include"}}),
    "rounds_3": ("R = 3 rounds, W-hat refit 1 epoch through the new Theta in each",
                 {"meta": {"rounds": 3, "refit_epochs": 1}}),
    "paper_init": ("the transfer's default layer init, no residual (the paper's)",
                   {"transfer": {"init": "paper"}}),
    "hidden_512": ("FC hidden width 512 (the paper's)", {"transfer": {"hidden": 512}}),
    "sml_st": ("SML-ST: W-hat fit through the transfer (the paper's step 1)", {}),
    "sml_n": ("SML-N: Theta trained on D_t itself, no next-period objective", {}),
}


def overlay(base: hp.Hyper, change: hp.Hyper) -> hp.Hyper:
    out = json.loads(json.dumps(base))
    for key, value in change.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--hyper", type=Path, help="the file smlrec tune writes")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--choices", default=",".join(CHOICES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    chosen = hp.read_hyper_file(args.hyper, 64) if args.hyper else hp.HyperFile(None, {})
    centre = hp.for_method("sml", chosen.methods)
    log = load_dataset(args.dataset)
    data = ReplayData.prepare(log, roles_for(len(log)))
    roles = data.roles
    seeds = [int(s) for s in args.seeds.split(",")]
    bases = {seed: pretrain(data, 64, seed, chosen.pretrain) for seed in seeds}
    lr = float(centre["meta"].get("lr", 1e-3))
    print(f"{args.dataset}: validation periods {roles.validation}, seeds {seeds}; "
          f"centre: {json.dumps(centre)}")
    head = (f"{'choice':<18}{'R@20':>8}{'ret R@20':>10}{'N@20':>8}{'ret N@20':>10}"
            f"{'transfer R':>12}{'cpu s':>8}")
    print(head + "\n" + "-" * len(head), flush=True)
    rows: dict[str, Any] = {}
    for name in args.choices.split(","):
        meaning, change = CHOICES[name]
        method = name if name in ("sml_st", "sml_n") else "sml"
        if name == "lr/10":
            change = {"meta": {"lr": lr / 10}}
        elif name == "lr*10":
            change = {"meta": {"lr": lr * 10}}
        hyper = overlay(centre, change)
        if not name.endswith("chosen"):  # one fit, window and rate: the centre's unless set
            hyper = hp.with_step_one_fit(hyper, "own")
            hyper = hp.with_step_one_window(hyper, int(hyper.get("step_one_window", 1)))
            hyper = hp.with_step_one_history(hyper, float(hyper.get("step_one_history", 0)))
            hyper = hp.with_theta_lr(hyper, float(hyper["meta"].get("lr", lr)))
        figures = []
        for seed in seeds:
            start = time.process_time()
            run = run_method(method, data, bases[seed], hyper=hyper, seed=seed,
                             last_period=roles.validation[-1])
            cpu = (time.process_time() - start) / len(run.cpu_seconds)
            served = [run.evaluations[p] for p in roles.validation]
            fitted = [run.fitted_evaluations[p] for p in roles.validation
                      if p in run.fitted_evaluations]
            a, r = aggregate(served), aggregate(served, "returning")
            contribution = (a["recall@20"] - aggregate(fitted)["recall@20"]
                            if len(fitted) == len(served) else float("nan"))
            figures.append([a["recall@20"], r["recall@20"], a["ndcg@20"], r["ndcg@20"],
                            contribution, cpu])
        mean = np.mean(figures, axis=0)
        rows[name] = {"meaning": meaning, "hyper": hyper, "per_seed": figures,
                      "mean": mean.tolist()}
        print(f"{name:<18}{mean[0]:>8.4f}{mean[1]:>10.4f}{mean[2]:>8.4f}{mean[3]:>10.4f}"
              f"{mean[4]:>+12.4f}{mean[5]:>8.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "seeds": seeds,
                                         "choices": rows}, indent=1))


if __name__ == "__main__":
    main()
