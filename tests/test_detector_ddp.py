"""Two CPU processes under torchrun train the same detector as one process does.

The equivalence rests on four things (see models/detector/train.py): the same global batches,
augmentation seeded per image position, BatchNorm statistics summed over processes, and loss
normalisers summed over processes. In float64 the first gradient of the two set-ups agrees to
1e-12; in float32 only rounding differs.

What is compared is the trained *function* (the exported graph's boxes and scores on the
validation images), not the raw weights: some weights have no effect on the function (a
BatchNorm bias feeding a conv + BatchNorm is removed by the second BatchNorm), so their
gradient is rounding noise, which Adam scales up to full-size steps of random sign. A control
run with a different batch split shows how far apart two genuinely different trainings land,
so the bound is known to be able to fail.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobilize.data.detection import load_detection, load_image
from mobilize.data.detection_synthetic import make_synthetic
from mobilize.models.detector.deploy import image_input, model_from_checkpoint

ARGS = ["train", "detector", "--imgsz", "96", "--width", "0.5", "--neck-channels", "32", "--epochs", "2",
        "--warmup", "2", "--lr", "0.003", "--no-ema", "--threads", "1", "--quiet", "--seed", "3"]


def _run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _outputs(ckpt: dict, x: torch.Tensor):
    with torch.no_grad():
        return model_from_checkpoint(ckpt)(x)


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(tmp_path):
    data = make_synthetic(tmp_path / "data", "voc", train=16, val=4, size=96, seed=2)
    py = [sys.executable, "-m", "mobilize"]
    _run(py + ARGS + ["--data", str(data), "--batch", "8", "--out", "one"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mobilize"]
         + ARGS + ["--data", str(data), "--batch", "8", "--out", "two"], tmp_path)
    _run(py + ARGS + ["--data", str(data), "--batch", "4", "--out", "control"], tmp_path)
    one, two, control = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in ("one", "two", "control"))
    assert one["step"] == two["step"] == 4 and control["step"] == 8
    assert two["meta"]["data"]["train_images"] == 16

    val = load_detection(data, "voc", "val")
    x = torch.from_numpy(np.stack([image_input(load_image(s.image), 96)[0] for s in val.samples]))
    (b1, s1), (b2, s2), (bc, sc) = (_outputs(c, x) for c in (one, two, control))
    box_diff, score_diff = float((b1 - b2).abs().max()), float((s1 - s2).abs().max())
    box_far, score_far = float((b1 - bc).abs().max()), float((s1 - sc).abs().max())
    assert box_diff < 0.05 and score_diff < 1e-4, (box_diff, score_diff)
    assert box_diff < 0.05 * box_far and score_diff < 0.05 * score_far, (box_diff, box_far, score_diff, score_far)
