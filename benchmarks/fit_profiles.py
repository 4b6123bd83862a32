"""Regenerate the shipped predictor profiles from real measurements.

    .venv/bin/python benchmarks/fit_profiles.py [--only android|host] [--kernels PATH] [--host-out PATH]

reads   ../shared/data/benchncnn/*.param and published_lowend.json (the ncnn project's
        published benchncnn latencies of low-end Cortex-A53 boards), and
        benchmarks/results/latency-host-kernels.json (this machine, layer by layer, from
        benchmarks/latency_host_kernels.py)
writes  mobilize/devices/profiles/android-lowend.json      Snapdragon 410, 4 threads
        mobilize/devices/profiles/android-lowend-1t.json   Snapdragon 410, 1 thread
        the predictor record of mobilize/devices/profiles/host.json (its measuring settings stay)

To validate the host method on another machine without touching the shipped files, time that
machine's layers into another file and write its host profile elsewhere:
    --only host --kernels benchmarks/results/latency-host-kernels-X.json --host-out PATH.json

Each Android profile is fitted on its device's published table, and carries every published
board's prices at the same thread count (`mobilize device calibrate` shrinks a few-model
calibration towards them, each weighted by how well it explains the measurements) and their
pooled relative prices, plus a leave-one-model-out error band and, per number of models, the
band that calibrations from that many models reached on the published boards held out. The host
predictor is fitted on whole-model sums and on every layer timed on its own.
The product reads only the written JSON files; ../shared is needed only here.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.measurements import benchncnn_input_shapes  # noqa: E402
from mobilize.devices.fit import (OWN_TABLE_STRENGTH, borrow_unseen, calibration_bands, fit_predictor,  # noqa: E402
                                  kinds_on_few_boards, pooled_prior, seen_kinds)
from mobilize.devices.graph import analyse  # noqa: E402
from mobilize.devices.predictor import features, fit  # noqa: E402
from mobilize.devices.profiles import PROFILES, Profile, load_profile, save_profile  # noqa: E402
from latency_host_kernels import fit_host, shown  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "benchncnn"
HOST = ROOT / "benchmarks" / "results" / "latency-host-benchncnn.json"
KERNELS = ROOT / "benchmarks" / "results" / "latency-host-kernels.json"
SD410 = "Qualcomm MSM8916 Snapdragon 410"
ANDROID = (("android-lowend", 4, "Cortex-A53 class phone (Snapdragon 410 / Raspberry Pi 3 class), ncnn, 4 threads"),
           ("android-lowend-1t", 1, "Cortex-A53 class phone (Snapdragon 410 / Raspberry Pi 3 class), ncnn, 1 thread"))


def published() -> list[dict]:
    pub = json.loads((DATA / "published_lowend.json").read_text())
    out = []
    for d in pub["devices"]:
        for r in d["runs"]:
            if r["cfg"]["gpu_device"] == -1:
                out.append({"device": d["device"], "cfg": r["cfg"], "ms": r["res"], "source": pub["source"]})
    return out


def config_label(c: dict) -> str:
    """'Rockchip RK3399, 4 thread(s), little cores': a board and how it was run."""
    cores = {1: ", little cores", 2: ", big cores"}.get(c["cfg"]["powersave"], "") if "RK3399" in c["device"] else ""
    return f"{c['device'].split('(')[0].strip()}, {c['cfg']['num_threads']} thread(s){cores}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("android", "host"), help="write only these profiles (default: all)")
    ap.add_argument("--kernels", type=Path, default=KERNELS, help="the host's layer timings (latency_host_kernels.py)")
    ap.add_argument("--host-out", type=Path, default=PROFILES / "host.json", help="where the host profile is written")
    args = ap.parse_args()
    if args.only == "host" and not args.kernels.is_file():
        raise SystemExit(f"{args.kernels} is missing: time the layers first (benchmarks/latency_host_kernels.py)")
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: the published tables are needed to fit the profiles")
    graphs = {p.stem: analyse(p, benchncnn_input_shapes(p)) for p in sorted(DATA.glob("*.param"))}
    configs = published()
    tfeats = {t: {m: features(g, threads=t) for m, g in graphs.items()}
              for t in sorted({c["cfg"]["num_threads"] for c in configs})}
    own, seen = [], []
    for c in configs:
        feats = tfeats[c["cfg"]["num_threads"]]
        names = sorted(m for m in c["ms"] if m in graphs)
        prices, _ = fit([feats[m] for m in names], [c["ms"][m] for m in names])
        own.append(prices)
        seen.append(seen_kinds([feats[m] for m in names]))

    def same_class(i: int) -> list[int]:
        """The configurations at board i's thread class (one thread, or several), i included."""
        one = configs[i]["cfg"]["num_threads"] == 1
        return [j for j, c in enumerate(configs) if (c["cfg"]["num_threads"] == 1) == one]

    def others_without(i: int, held: str | None) -> dict:
        """The other boards' pooled relative prices at board i's thread class, fitted without `held`."""
        sets = []
        for j in same_class(i):
            c = configs[j]
            if j == i:
                continue
            feats = tfeats[c["cfg"]["num_threads"]]
            names = sorted(m for m in c["ms"] if m in graphs and m != held)
            sets.append(own[j] if held not in c["ms"] else fit([feats[m] for m in names], [c["ms"][m] for m in names])[0])
        return pooled_prior(sets)

    def donors(i: int) -> list[tuple[dict, set]]:
        """The other boards at the same thread class: what a kind board i never ran costs there."""
        return [(own[j], seen[j]) for j in same_class(i) if j != i]

    # A kind a board's models never ran (only QRB2210's table has a transformer) would cost its
    # parent's price there (`gemm` = the 1x1 convolutions'); the boards that ran it say how the two
    # compare (on QRB2210 a transformer's GEMM MAC costs 2.4-3.6x a 1x1 convolution's).
    borrowed = [borrow_unseen(own[i], seen[i], donors(i)) for i in range(len(configs))]
    unborrowed, own = own, [b[0] for b in borrowed]

    for name, threads, desc in (ANDROID if args.only != "host" else ()):
        idx = next(i for i, c in enumerate(configs)
                   if c["device"].startswith(SD410) and c["cfg"]["num_threads"] == threads)
        cfg = configs[idx]
        peers = same_class(idx)
        ms = {m: v for m, v in cfg["ms"].items() if m in graphs}
        # The Snapdragon 410's own table (31 models) sets its prices: across the ten published
        # configurations, leave-one-model-out is better with a device's own table than shrunk
        # towards the other boards (docs/devices-validation.md, latency-predictor.json: "device" vs "prior"),
        # except for the fully connected weights' price, which two models of a table cannot pin:
        # that one leans on the other boards' (OWN_TABLE_STRENGTH). Leave-one-model-out removes
        # the held-out model from the other boards' prices too. The published boards' pooled
        # prices are also kept as the prior that `mobilize device calibrate` needs when a team
        # has measured only a few models.
        record = fit_predictor({m: graphs[m] for m in ms}, ms, prior=others_without(idx, None),
                               strength=OWN_TABLE_STRENGTH, threads=threads,
                               prior_without=lambda held, i=idx: others_without(i, held))
        record["prices"], record["borrowed_prices"] = borrow_unseen(record["prices"], seen[idx], donors(idx))
        record["prior_prices"] = pooled_prior([own[i] for i in peers])
        # kinds that fewer than two boards' models ran (a transformer's GEMMs: QRB2210 alone):
        # `check` says when a prediction leans on them
        ran = {}
        for i in peers:
            ran.setdefault(configs[i]["device"].split("(")[0].strip(), set()).update(seen[i])
        record["kinds_on_few_boards"] = kinds_on_few_boards(ran)
        # each published board's own prices: `device calibrate` weighs them by how well each
        # explains a team's few models (better than pooling them alike on a held-out board)
        record["reference_prices"] = {config_label(configs[i]): own[i] for i in peers}
        # How far off a calibration from k models of a board the references never saw is (each
        # published board held out in turn, its own prices as they were before borrowing from the
        # others): `device calibrate` never reports a narrower band than its size reached here.
        tables = [{"board": configs[i]["device"], "feats": tfeats[configs[i]["cfg"]["num_threads"]],
                   "ms": {m: v for m, v in configs[i]["ms"].items() if m in graphs}, "prices": unborrowed[i]}
                  for i in peers]
        record["calibration_bands"] = {
            "sizes": calibration_bands(tables), "subsets": 30,
            "meaning": "k models (the largest size up to the number measured) calibrating a published board held "
                       "out from the references: log_p90, 90% of their other models within x/e^b .. x*e^b (pooled "
                       "over the boards); own_factor, the factor on the k models' own leave-one-out band that "
                       "made max(log_p90, factor * own band) hold 90% on every board"}
        record["prior"] = f"published low-end boards at {'1 thread' if threads == 1 else 'several threads'}"
        record["source"] = {"published": cfg["source"], "device": cfg["device"], "config": cfg["cfg"],
                            "prior_devices": sorted({f"{configs[i]['device'].split('(')[0].strip()} "
                                                     f"({configs[i]['cfg']['num_threads']}t)" for i in peers})}
        profile = Profile(name=name, kind="predicted", description=desc, runtimes=["ncnn"], threads=threads,
                          predictor=record, notes=[
                              "latency is predicted from the ncnn graph: per-layer MACs, bytes and dispatches "
                              "priced per kernel kind (mobilize/devices/predictor.py)",
                              "fitted by benchmarks/fit_profiles.py; validation in docs/devices-validation.md"])
        save_profile(profile, PROFILES / f"{name}.json")
        loo = record["error_band"]["loo"]
        print(f"{name}: {len(ms)} models, leave-one-out median {loo['median_abs_pct']}%, p90 {loo['p90_abs_pct']}%; "
              "held-out calibration bands " + ", ".join(f"{k} models x{math.exp(b['log_p90']):.2f} "
                                                       f"(own band x{b['own_factor']})"
                                                       for k, b in record["calibration_bands"]["sizes"].items()))

    if args.only != "android" and args.kernels.is_file():
        # This machine is shared: a whole 100 ms inference is almost never left alone, and its
        # fastest run still varies 2-4x between rounds (latency-host-benchncnn.json). A single
        # layer's fastest run is stable, so the host predictor is calibrated (and validated, in
        # latency_host_zoo.py) on the sum of per-layer uncontended times.
        kern = json.loads(args.kernels.read_text())
        # Fitted on whole-model sums and on every layer on its own: the layers pin what
        # millisecond models cannot (the cost of a dispatch, of a 16-channel convolution), and
        # user models are small. "cached_bytes" is below the per-core L2 of the machine the layers
        # were timed on (recorded with them), not of the one fitting.
        record = fit_host(kern, graphs)
        record["source"] = {"measured": shown(args.kernels),
                            "statistic": "sum over layers of each layer's fastest run (1 thread, fp32); "
                                         "fitted on whole models and on each layer",
                            "date": kern.get("date")}
        host = load_profile("host")
        host.predictor = record
        save_profile(host, args.host_out)
        loo = record["error_band"]["loo"]
        print(f"host: {len(record['calibration']['models'])} models, leave-one-out median {loo['median_abs_pct']}%, p90 {loo['p90_abs_pct']}%")
    if args.only != "android" and HOST.is_file():
        rounds = json.loads(HOST.read_text()).get("fastest_run_ms", {}).get("1", {})
        if rounds:
            print("whole-model fastest runs, spread over rounds (median of max/min):",
                  round(statistics.median(max(v) / min(v) for v in rounds.values()), 2))

if __name__ == "__main__":
    main()
