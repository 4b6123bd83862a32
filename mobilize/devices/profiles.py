"""Device profiles: what a device is and how its latency is obtained, as plain JSON files.

Three kinds:
- "predicted": a phone no one has attached; ncnn latency comes from the per-layer predictor
  with the profile's fitted prices and error band;
- "host": this machine, measured in each runtime;
- "browser": headless Chromium on this machine, measured, with the CPU throttled.

Shipped profiles live in `profiles/*.json` (written by `benchmarks/fit_profiles.py` for the
predicted ones); `--device` takes one of their names or a path to any profile file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInput

SCHEMA = "mobilize.device/1"
PROFILES = Path(__file__).parent / "profiles"
KINDS = ("predicted", "host", "browser")


@dataclass
class Profile:
    name: str
    kind: str
    description: str = ""
    runtimes: list[str] = field(default_factory=list)
    threads: int = 1
    throttle: float = 1.0  # browser: CPU slowdown through the DevTools protocol
    # browser: instead of a fixed throttle, the rate at which this machine's Chromium scores this
    # Lighthouse BenchmarkIndex (calibrated on each run, as Chrome DevTools' calibrated presets)
    benchmark_index: float | None = None
    warmup: int = 5
    runs: int = 30
    max_seconds: float = 20.0  # measured kinds stop after this much steady-state time
    predictor: dict = field(default_factory=dict)  # prices, error band, calibration record
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA
    path: str | None = None  # where it was loaded from

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        return {k: v for k, v in d.items() if v not in ({}, [], None)}

    @classmethod
    def from_dict(cls, d: dict, path: str | None = None) -> "Profile":
        known = set(cls.__dataclass_fields__)
        if d.get("kind") not in KINDS:
            raise BadInput(f"device profile {path or d.get('name')}: kind must be one of {', '.join(KINDS)}")
        if d["kind"] == "predicted" and not d.get("predictor", {}).get("prices"):
            raise BadInput(f"device profile {path or d.get('name')} is 'predicted' but has no predictor prices",
                           "make one with `mobilize device calibrate`")
        return cls(**{k: v for k, v in d.items() if k in known and k != "path"}, path=path)

    @property
    def band(self) -> float:
        """Half-width of the error band in log space (90% of calibration errors were inside it)."""
        return float(self.predictor.get("error_band", {}).get("log_p90", 0.0))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.json"))


def load_profile(device: str | Path | Profile) -> Profile:
    """A shipped profile by name, or a profile JSON file by path."""
    if isinstance(device, Profile):
        return device
    text = str(device)
    path = Path(text)
    if text in builtin_names():
        path = PROFILES / f"{text}.json"
    elif not (path.suffix == ".json" and path.is_file()):
        raise BadInput(f"unknown device '{text}'",
                       f"use one of {', '.join(builtin_names())}, or a path to a profile .json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"device profile '{path}' is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "name" not in data:
        raise BadInput(f"'{path}' is not a mobilize device profile (no 'name')")
    return Profile.from_dict(data, str(path))


def list_profiles() -> list[Profile]:
    return [load_profile(n) for n in builtin_names()]


def save_profile(profile: Profile, out: Path | str) -> Path:
    """Write atomically: a temp file in the same directory, renamed over the target."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(profile.to_dict(), indent=1) + "\n")
    os.replace(tmp, out)
    return out
