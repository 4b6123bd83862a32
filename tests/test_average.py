"""`mobilize average`: the mean of several runs' weights as one checkpoint, and what it refuses."""

from __future__ import annotations

import json

import pytest
import torch


def _run(tmp_path, name, seed, pretrained="imagenet", **net):
    """A retrieval checkpoint laid out as training writes it (small MobileNet, random weights)."""
    from mobilize.models.retrieval.model import NetConfig, build_net

    torch.manual_seed(seed)
    cfg = NetConfig(**{"width": 0.25, "input_size": 32, "embedding_dim": 16, **net})
    model = build_net(cfg)
    for m in model.modules():  # distinct BatchNorm statistics per run, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.num_batches_tracked.fill_(100 + seed)
    path = tmp_path / f"{name}.pt"
    torch.save({"family": "retrieval", "format": 1, "classes": ["a", "b"],
                "config": {"net": cfg.to_dict(), "train": {"pretrained": pretrained, "epochs": 20}},
                "model": model.state_dict(), "epoch": 20, "step": 400, "optimizer": {"lr": 1e-3},
                "history": [{"epoch": 1, "loss": 3.0}], "metrics": {"recall@1": 0.5}}, path)
    return path


def test_average_is_the_mean_of_every_float_tensor(tmp_path, run_cli):
    a, b, c = (_run(tmp_path, n, s) for n, s in (("a", 0), ("b", 1), ("c", 2)))
    code, out, err = run_cli("average", a, b, c, "--out", tmp_path / "soup.pt")
    assert code == 0, err
    soup = torch.load(tmp_path / "soup.pt", weights_only=True)
    runs = [torch.load(p, weights_only=True) for p in (a, b, c)]
    n = len(runs[0]["model"])
    assert out == f"wrote {tmp_path / 'soup.pt'}: the mean of 3 retrieval checkpoints ({n} tensors)\n"
    for key, value in soup["model"].items():
        if value.is_floating_point():
            want = (runs[0]["model"][key] + runs[1]["model"][key] + runs[2]["model"][key]) / 3
            assert torch.allclose(value, want, atol=1e-7), key
        else:  # BatchNorm's batch counter: the first run's
            assert torch.equal(value, runs[0]["model"][key]), key
    bn = next(k for k in soup["model"] if k.endswith("running_mean"))
    assert not torch.equal(soup["model"][bn], runs[0]["model"][bn])  # the statistics are averaged too
    # one run's training state does not describe the average; the architecture and classes do
    assert not {"optimizer", "history", "metrics", "epoch", "step"} & soup.keys()
    assert soup["config"] == runs[0]["config"] and soup["classes"] == ["a", "b"]
    assert soup["average_of"] == [str(a), str(b), str(c)]


def test_average_of_copies_is_the_run_and_exports_like_it(tmp_path):
    import mobilize
    from mobilize.sources import load_checkpoint

    a = _run(tmp_path, "a", 0)
    summary = mobilize.average([a, a], tmp_path / "same.pt")
    assert summary["family"] == "retrieval" and summary["out"] == str(tmp_path / "same.pt")
    x = torch.rand(2, 3, 32, 32)
    one, same = (load_checkpoint(p) for p in (a, tmp_path / "same.pt"))
    with torch.no_grad():
        assert torch.allclose(one.module(x), same.module(x), atol=1e-6)
    assert same.metadata["average_of"] == [str(a), str(a)] and "average_of" not in one.metadata


@pytest.mark.parametrize("case, message", [
    ("one", "averaging needs two or more checkpoints, got 1"),
    ("width", "'{b}' and '{a}' are different architectures: net.width is 0.5 and 0.25"),
    ("attention", "'{b}' and '{a}' are different architectures: net.attention is 'none' and 'spatial'"),
    ("scratch", "only runs fine-tuned from the same pretrained weights average into a working network; "
                "these start from none, none"),
    ("mixed", "only runs fine-tuned from the same pretrained weights average into a working network; "
              "these start from imagenet, w.pth"),
    ("tensors", "'{b}' and '{a}' do not have the same tensors: they are different architectures"),
    ("family", "cannot average a 'detector' checkpoint ('{b}') with a 'retrieval' one ('{a}')"),
    ("out", "--out '{a}' is one of the inputs: write the average to a new file"),
    ("missing", "checkpoint '{b}' does not exist"),
])
def test_average_refuses_what_does_not_average(tmp_path, run_cli, case, message):
    a = _run(tmp_path, "a", 0, **({"pretrained": "none"} if case == "scratch" else {}))
    b = {"width": lambda: _run(tmp_path, "b", 1, width=0.5),
         "attention": lambda: _run(tmp_path, "b", 1, attention="none"),
         "scratch": lambda: _run(tmp_path, "b", 1, pretrained="none"),
         "mixed": lambda: _run(tmp_path, "b", 1, pretrained="w.pth"),
         "missing": lambda: tmp_path / "b.pt"}.get(case, lambda: _run(tmp_path, "b", 1))()
    if case == "family":
        state = torch.load(b, weights_only=True)
        torch.save({**state, "family": "detector"}, b)
    if case == "tensors":  # a wider network whose config does not name its width: the tensors tell
        state = torch.load(_run(tmp_path, "b", 1, width=0.5), weights_only=True)
        state["config"]["net"].pop("width")
        torch.save(state, b)
    args = {"one": [a], "out": [a, b]}.get(case, [a, b])
    out = a if case == "out" else tmp_path / "soup.pt"
    code, stdout, err = run_cli("average", *args, "--out", out)
    assert code == 2
    assert err.strip().splitlines()[0] == f"mobilize: error: {message.format(a=a, b=b)}"
    assert not (tmp_path / "soup.pt").exists()


def test_average_json(tmp_path, run_cli):
    a, b = _run(tmp_path, "a", 0), _run(tmp_path, "b", 1)
    code, out, _ = run_cli("average", a, b, "--out", tmp_path / "s.pt", "--json")
    assert code == 0
    assert json.loads(out) == {"family": "retrieval", "inputs": [str(a), str(b)], "out": str(tmp_path / "s.pt"),
                               "tensors": len(torch.load(a, weights_only=True)["model"])}
