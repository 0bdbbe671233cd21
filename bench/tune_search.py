"""A real hyperparameter search on this machine, then a seed check of what it found.

1. ``search``: ``tune.trials`` trials of ``tune.<model>.space`` (params.yaml), within a
   budget of ``--minutes`` (no trial starts after it), judged on validation. Trial 0 is the
   current params.yaml (the baseline).
2. ``seeds``: the best configuration and the baseline trained again with other seeds
   (``train.seed``), so that the difference can be compared with seed noise. The rule:
   adopt the best when its mean over the seeds beats the baseline's mean by more than the
   larger of the two standard deviations. The test split is read by neither phase.

Writes ``--out`` (JSON) and the study's reports beside it. Example (the DVC flow's
outputs must exist: ``make repro``)::

    python bench/tune_search.py --minutes 90 --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from skinlesion.config.files import load_params
from skinlesion.tuning.report import best_values, summarize
from skinlesion.tuning.space import with_values
from skinlesion.tuning.study import open_study, run_search, search_for


def search_phase(args: argparse.Namespace, params: Any, search: Any) -> dict[str, Any]:
    started = time.perf_counter()
    study = run_search(params, search, args.manifest, args.data_dir, None, args.minutes * 60)
    summary = summarize(study, params, search)
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "epochs_reported": len(t.intermediate_values),
            "minutes": None if t.duration is None else round(t.duration.total_seconds() / 60, 1),
            "baseline": bool(t.user_attrs.get("baseline")),
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return {
        "budget_minutes": args.minutes,
        "wall_minutes_this_call": round((time.perf_counter() - started) / 60, 1),
        "summary": summary,
        "trials": trials,
    }


def seeds_phase(args: argparse.Namespace, params: Any, search: Any) -> dict[str, Any]:
    """Baseline and best, each trained again with every seed of ``--seeds``."""
    from skinlesion.training.lifecycle import train_model

    study = open_study(params, search)
    best = best_values(study, params, search.model)
    baseline = next(t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline"))
    configs = {"baseline": {}, "best": best}
    if baseline.number == study.best_trial.number:
        configs = {"baseline": {}}  # nothing beat it: only the noise is measured
    seed_runs: dict[str, list[dict[str, Any]]] = {}
    for name, values in configs.items():
        first = baseline if name == "baseline" else study.best_trial
        runs = [{"seed": params.train.seed, "val": first.value, "from": f"trial {first.number}"}]
        for seed in args.seeds:
            scratch = Path(params.tune.work_dir) / "seeds" / f"{name}-{seed}"
            trial_params = with_values(params, {**values, "train.seed": seed}, scratch)
            result = train_model(
                search.model,
                args.manifest,
                args.data_dir,
                scratch / "model.keras",
                scratch / "report",
                trial_params,
                run_name=f"seed-check-{name}-{seed}",
                tags={"tune.study": search.study, "tune.seed_check": name},
                log_model=False,
            )
            runs.append(
                {
                    "seed": seed,
                    "val": result.val_balanced_accuracy,
                    "val_mel_recall": result.val_mel_recall,
                    "best_epoch": result.best_epoch,
                }
            )
            print(json.dumps({name: runs[-1]}), flush=True)
        seed_runs[name] = runs
    stats = {
        name: {
            "mean": statistics.mean(r["val"] for r in runs),
            "stdev": statistics.stdev(r["val"] for r in runs) if len(runs) > 1 else 0.0,
        }
        for name, runs in seed_runs.items()
    }
    adopt = "best" in stats and stats["best"]["mean"] - stats["baseline"]["mean"] > max(
        stats["best"]["stdev"], stats["baseline"]["stdev"]
    )
    return {"best_values": best, "runs": seed_runs, "stats": stats, "adopt": adopt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["search", "seeds", "all"], default="all")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--minutes", type=int, default=90, help="search budget")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--manifest", type=Path, default=Path("data/oversampled/manifest.csv"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/raw/ham10000"))
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--study", default=None, help="default: the params' study name")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tune_search.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    params = load_params(args.params)
    search = search_for(params, args.model, args.out.with_suffix(""), args.study)
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update(
        host={"machine": platform.machine(), "processor": platform.processor()},
        model=args.model,
        study=search.study,
    )
    if args.phase in ("search", "all"):
        result["search"] = search_phase(args, params, search)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.phase in ("seeds", "all"):
        result["seeds"] = seeds_phase(args, params, search)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "search"}, indent=2, default=str))


if __name__ == "__main__":
    main()
