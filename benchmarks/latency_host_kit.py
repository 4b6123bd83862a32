"""Would the sampled convolution bundles make a calibration kit for phones? Checked on this machine.

A team could run latency_host_sampled.py's five bundles with benchncnn on its phone and give their
whole times to `mobilize device calibrate`. The host plays the phone here, a device the predictor
has never seen: calibrated as `device calibrate` does (the published boards' 1-thread prices,
weighted by how well each explains the calibration, as the prior; strength 1) from five random
benchncnn models (30 subsets), from the five bundles, or from both, then predicting the other
benchncnn models and the export test zoo. The timings are the stored layer sums of the
latency_host_zoo.py --sampled runs; no timing here (docs/devices-validation.md, "Sampled convolutions").

    .venv/bin/python benchmarks/latency_host_kit.py      -> benchmarks/results/latency-host-kit.json (~1 min)
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latency_host_replay import BENCHNCNN, RESULTS, SAMPLED_RUNS, zoo_graphs  # noqa: E402
from latency_host_sampled import timed_bundles  # noqa: E402
from mobilize.devices.fit import STRENGTH, reference_prior  # noqa: E402
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.predictor import error_summary, features, fit, predict  # noqa: E402
from mobilize.devices.profiles import load_profile  # noqa: E402

OUT = RESULTS / "latency-host-kit.json"
SUBSETS = 30


def main() -> None:
    prior_profile = load_profile("android-lowend-1t").predictor
    refs, cache = prior_profile["reference_prices"], prior_profile["cache_bytes"]
    bench = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(BENCHNCNN.glob("*.param"))}
    zoo = zoo_graphs()
    result = {"what": "the host as an unseen device, calibrated as `device calibrate` does from five benchncnn models, "
                      "the five sampled bundles, or both; medians over the calibration subsets",
              "date": time.strftime("%Y-%m-%d"), "prior_strength": STRENGTH, "runs": {}}
    for run, (kernels, zoo_file) in SAMPLED_RUNS.items():
        kern, measured = json.loads(kernels.read_text()), json.loads(zoo_file.read_text())
        bundles, _, bundle_ms = timed_bundles(kern)
        ms = {m: v for m, v in kern["sum_ms"].items() if v > 0 and m in bench} | bundle_ms
        feats = {n: features((bench | bundles)[n], threads=1, cache_bytes=cache) for n in ms}
        labels = sorted(k for k in measured["models"] if k in zoo)
        zoo_feats = {k: features(zoo[k], threads=1, cache_bytes=cache) for k in labels}
        models, kit = sorted(m for m in ms if m in bench), sorted(bundles)

        def calibrated(cal: list[str]) -> tuple[dict, dict]:
            prior, _ = reference_prior({n: feats[n] for n in cal}, {n: ms[n] for n in cal}, refs, STRENGTH)
            prices, _ = fit([feats[n] for n in cal], [ms[n] for n in cal], prior=prior, strength=STRENGTH)
            test = [m for m in models if m not in cal]
            return (error_summary([predict(prices, feats[m]) for m in test], [ms[m] for m in test]),
                    error_summary([predict(prices, zoo_feats[k]) for k in labels],
                                  [measured["models"][k]["measured_ms"] for k in labels]))

        rng = random.Random(0)
        picks = [rng.sample(models, 5) for _ in range(SUBSETS)]
        rows = {}
        for label, cals in (("five models", picks), ("five bundles", [kit]), ("bundles and five models", [kit + p for p in picks])):
            res = [calibrated(c) for c in cals]
            rows[label] = {part: {key: round(float(np.median([r[i][key] for r in res])), 3)
                                  for key in ("median_abs_pct", "p90_abs_pct", "within_20_pct")}
                           for i, part in enumerate(("other_benchncnn_models", "zoo"))} | {"calibrations": len(cals)}
            b, z = rows[label]["other_benchncnn_models"], rows[label]["zoo"]
            print(f"{run}, {label:24s} benchncnn median {b['median_abs_pct']}%, p90 {b['p90_abs_pct']}%; "
                  f"zoo median {z['median_abs_pct']}%, p90 {z['p90_abs_pct']}%", flush=True)
        result["runs"][run] = rows
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
