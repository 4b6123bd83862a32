"""mobilize device: list, show and calibrate device profiles."""

from __future__ import annotations

from ._output import add_output_options, print_json, reporter

NAME = "device"
ORDER = 45
HELP = "device profiles: list, show, calibrate a new one from your phone's measurements"
DESCRIPTION = """Device profiles say how latency is obtained on a device: predicted (a phone, from the
ncnn graph), measured on this machine (host), or measured in throttled Chromium (browser).

`calibrate` builds a predicted profile for your own phone from benchncnn's output on it (or a
JSON object {model_name: milliseconds}) and the matching MODEL.param files."""
EPILOG = """examples:
  mobilize device list
  mobilize device show android-lowend
  # on the phone: ./benchncnn 8 4 0 -1 1 > bench.txt   (in ncnn's benchmark/ directory)
  mobilize device calibrate --name my-phone --measurements bench.txt --models ncnn/benchmark --out my-phone.json
  mobilize check artifacts/det --device my-phone.json --fps 30"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    add_output_options(sub.add_parser("list", help="the shipped profiles"))
    show = sub.add_parser("show", help="one profile in full (name or path)")
    show.add_argument("profile", metavar="PROFILE")
    add_output_options(show)
    cal = sub.add_parser("calibrate", help="fit a predicted profile from measurements on a device")
    cal.add_argument("--name", required=True, help="profile name")
    cal.add_argument("--measurements", required=True, metavar="FILE",
                     help="benchncnn text output, or JSON {model_name: ms}")
    cal.add_argument("--models", required=True, metavar="DIR", help="directory with MODEL_NAME.param for each model")
    cal.add_argument("--out", required=True, metavar="PROFILE.json", help="where to write the profile")
    cal.add_argument("--threads", type=int, help="threads the measurements used (default: from the file, else 1)")
    cal.add_argument("--prior", metavar="PROFILE",
                     help="profile whose prices to shrink towards (default: android-lowend[-1t] by threads)")
    cal.add_argument("--description", default="", help="one line about the device")
    add_output_options(cal)


def run(args) -> int:
    from ..errors import BadInput

    action = getattr(args, "action", None)
    if action is None:
        raise BadInput("say what to do: mobilize device list | show PROFILE | calibrate ...")
    if action == "list":
        return _list(args)
    if action == "show":
        from ..devices import load_profile

        profile = load_profile(args.profile)
        print_json(profile.to_dict())
        return 0
    from ..devices import calibrate
    from ..devices.predictor import calibrated_range

    profile = calibrate(args.name, args.measurements, args.models, args.out, threads=args.threads,
                        prior=args.prior, description=args.description, reporter=reporter(args))
    band = profile.predictor.get("error_band", {})
    loo = band.get("loo", {})
    lo, hi = calibrated_range(profile.predictor)
    if args.json:
        print_json({"profile": str(args.out), "name": profile.name, "threads": profile.threads,
                    "models": len(profile.predictor["calibration"]["models"]), "loo": loo,
                    "error_band_log": band.get("log_p90"), "held_out_band": band.get("held_out"),
                    "calibrated_range_ms": [lo, hi],
                    "prior_references": profile.predictor.get("prior_references")})
    else:
        import math

        n = len(profile.predictor["calibration"]["models"])
        print(f"wrote {args.out}: {profile.name}, {profile.threads} thread(s), calibrated on {n} models")
        if loo:
            print(f"leave-one-model-out error: median {loo['median_abs_pct']:.1f}%, 90th percentile "
                  f"{loo['p90_abs_pct']:.1f}%; predictions are reported with a x{math.exp(band['log_p90']):.2f} band")
        held_out = band.get("held_out")
        if held_out and held_out["log_p90"] >= band["log_p90"]:
            print(f"(the band of calibrations from {held_out['models']} models of published boards left out of the "
                  f"prior: 90% of their other models were within it; a few models' own errors understate "
                  f"those of models unlike them)")
        elif held_out and band["log_p90"] > held_out["own_log_p90"]:
            print(f"(your models' own leave-one-out band, x{math.exp(held_out['own_log_p90']):.2f}, widened "
                  f"{held_out['own_factor']}-fold in log terms: on published boards left out of the prior, "
                  f"calibrations from {held_out['models']} models needed that to hold 90% of each board's other models)")
        print(f"calibrated on models from {lo:.3g} to {hi:.3g} ms; `check` flags a prediction outside that "
              f"range as extrapolated")
        refs = profile.predictor.get("prior_references")
        if refs:
            board, e = next(iter(refs.items()))
            print(f"most like: {board} (weight {e['weight']:.0%} of {len(refs)} published boards in the prior)")
        for note in profile.notes[1:]:
            print(note)
    return 0


def _list(args) -> int:
    from .._ui import table
    from ..devices import list_profiles
    from ..devices.check import throttle_text

    profiles = list_profiles()
    if args.json:
        print_json({p.name: {"kind": p.kind, "description": p.description, "runtimes": p.runtimes,
                             "threads": p.threads, "throttle": p.throttle,
                             "benchmark_index": p.benchmark_index} for p in profiles})
        return 0
    rows = []
    for p in profiles:
        how = {"predicted": "predicted (ncnn)", "host": "measured here",
               "browser": f"Chromium, {throttle_text(p)}"}[p.kind]
        rows.append([p.name, how, ", ".join(p.runtimes), p.threads, p.description])
    print(table(rows, ["profile", "latency", "runtimes", "threads", "device"]))
    return 0
