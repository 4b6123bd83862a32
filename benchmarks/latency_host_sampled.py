"""Sampled convolutions for the host calibration, as nn-Meter samples kernel configurations.

benchncnn, the host profile's calibration set, holds few of the layers users' small models are
made of (16-64 channels, small and very wide maps, few-channel stems), so the host predictor
extrapolates to them. nn-Meter calibrates each kernel on configurations sampled over its design
space instead of on whole models alone. This draws such a sample, from a fixed seed and a design
space chosen without looking at the zoo (channels 3-512, maps 7-224, the kernels mobile CNNs use),
as a few "bundles": ncnn networks of independent layers, one Input each, so that every layer is
timed alone (kernels.py) and a bundle enters the fit as one model whose layers weigh together as
much as it does.

    from latency_host_sampled import write_bundles, timed_bundles
    bundles = write_bundles(Path("some/dir"))   # {name: (.param path, analysed graph)}, to time
    graphs, layer_ms, ms = timed_bundles(kern)  # from a kernels record that holds their timings
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilize.devices.fit import LAYER_FLOOR_MS  # noqa: E402
from mobilize.devices.graph import Graph, analyse  # noqa: E402

SEED = 20261205
CHANNELS = (3, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)
MAPS = (7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 224)
MACS = (2e4, 1.5e8)  # per layer: from a few microseconds to about ten milliseconds here
# bundle: (layers, kernel, stride, depth-wise)
DESIGN = {"sampled_conv1x1": (50, 1, 1, False), "sampled_conv3x3": (60, 3, 1, False),
          "sampled_conv3x3_s2": (30, 3, 2, False), "sampled_dwconv3x3": (40, 3, 0, True),
          "sampled_dwconv5x5": (15, 5, 0, True)}


def _layer(i: int, cin: int, cout: int, k: int, s: int, dw: bool) -> str:
    if dw:
        return (f"ConvolutionDepthWise l{i} 1 1 x{i} y{i} 0={cin} 1={k} 3={s} 4={k // 2} 5=1 "
                f"6={cin * k * k} 7={cin} 9=1")
    return f"Convolution l{i} 1 1 x{i} y{i} 0={cout} 1={k} 3={s} 4={k // 2} 5=1 6={cin * cout * k * k} 9=1"


def sample(name: str, seed: int = SEED) -> list[tuple[int, int, int, int, int, bool]]:
    """The bundle's layers as (cin, cout, map, kernel, stride, depth-wise), drawn uniformly over the
    channel and map lists (stride 0: 1 or 2 at random) and kept when their MACs lie in MACS."""
    n, k, stride, dw = DESIGN[name]
    rng = random.Random(f"{seed}:{name}")
    out = []
    while len(out) < n:
        cin = rng.choice(CHANNELS if k == 3 and not dw else CHANNELS[1:])
        cout = cin if dw else rng.choice(CHANNELS[1:])
        hw = rng.choice(MAPS)
        s = stride or rng.choice((1, 2))
        ho = (hw + 2 * (k // 2) - k) // s + 1
        macs = (cin if dw else cin * cout) * k * k * ho * ho
        if MACS[0] <= macs <= MACS[1]:
            out.append((cin, cout, hw, k, s, dw))
    return out


def bundle_param(name: str, seed: int = SEED) -> tuple[str, dict[str, list[int]]]:
    """(.param text, input shapes) of one bundle."""
    lines, shapes = [], {}
    for i, (cin, cout, hw, k, s, dw) in enumerate(sample(name, seed)):
        lines.append(f"Input in{i} 0 1 x{i} 0={hw} 1={hw} 2={cin}")
        lines.append(_layer(i, cin, cout, k, s, dw))
        shapes[f"x{i}"] = [cin, hw, hw]
    text = "7767517\n" + f"{len(lines)} {len(lines)}\n" + "\n".join(lines) + "\n"
    return text, shapes


def write_bundles(folder: Path, seed: int = SEED) -> dict[str, tuple[Path, Graph]]:
    """Every bundle written to folder as NAME.param: {name: (path, analysed graph)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in DESIGN:
        text, shapes = bundle_param(name, seed)
        path = folder / f"{name}.param"
        path.write_text(text)
        out[name] = (path, analyse(path, shapes, name=name))
    return out


def timed_bundles(kern: dict) -> tuple[dict[str, Graph], dict[str, dict[str, float]], dict[str, float]]:
    """The sampled layers of a kernels record (latency_host_zoo.py --sampled): the bundles' graphs
    (redrawn from the record's seed: the draw is deterministic), their layer timings, and each
    bundle's time as the sum of its layers (a layer at or below the loop overhead counts
    LAYER_FLOOR_MS, as in calibration)."""
    if "sampled" not in kern:
        raise ValueError("this kernels record holds no sampled layers: time them with latency_host_zoo.py --sampled")
    with tempfile.TemporaryDirectory() as d:
        graphs = {name: g for name, (_, g) in write_bundles(Path(d), kern["sampled"]["seed"]).items()}
    layer_ms = kern["sampled"]["layer_ms"]
    return graphs, layer_ms, {n: sum(max(v, LAYER_FLOOR_MS) for v in layer_ms[n].values()) for n in graphs}


if __name__ == "__main__":
    import collections

    with tempfile.TemporaryDirectory() as d:
        for name, (_, g) in write_bundles(Path(d)).items():
            kinds = collections.Counter(c.kind for c in g.layers if c.kind != "free")
            print(f"{name}: {len(g.layers)} layers, {g.macs / 1e6:.0f} MMAC, kinds {dict(kinds)}")
