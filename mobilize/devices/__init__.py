"""Device profiles, the ncnn latency predictor, host measurement and the browser harness.

    mobilize.devices.check(target, device, budget_ms=..., fps=...)   -> CheckResult
    mobilize.devices.calibrate(name, measurements, models, out)      -> Profile
    mobilize.devices.bench(source, devices=..., data=..., out=...)   -> dict
    mobilize.devices.load_profile(name_or_path), list_profiles()
"""

from __future__ import annotations

from .check import CheckResult, check
from .profiles import Profile, builtin_names, list_profiles, load_profile, save_profile


def calibrate(*args, **kwargs):
    from .fit import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


def bench(*args, **kwargs):
    from .bench import bench as _bench

    return _bench(*args, **kwargs)


__all__ = ["CheckResult", "Profile", "bench", "builtin_names", "calibrate", "check", "list_profiles",
           "load_profile", "save_profile"]
