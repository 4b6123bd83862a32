"""dedup and clean on planted duplicates and outliers: dry runs change nothing, --apply only moves."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from mobilize.data import cleaning
from mobilize.data.retrieval import _product_recipe, render_product


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mobilize(*args):
    return subprocess.run([sys.executable, "-m", "mobilize", *map(str, args)], capture_output=True, text=True)


@pytest.fixture()
def dup_set(tmp_path):
    """Eight distinct photos plus three planted near-copies (re-encoded, leaked to val, relabelled)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "set"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
    (root / "val" / "a").mkdir(parents=True)
    for i in range(8):
        img = Image.fromarray(render_product(_product_recipe(rng, None), rng, 64))
        img.save(root / "train" / ("a" if i < 4 else "b") / f"img{i}.png")
    a1 = Image.open(root / "train/a/img1.png")
    a1.resize((60, 60)).resize((64, 64)).convert("RGB").save(root / "train/a/img1_copy.jpg", quality=80)
    Image.open(root / "train/a/img2.png").save(root / "val/a/img2_leak.png")
    ImageEnhance.Brightness(Image.open(root / "train/a/img3.png").convert("RGB")).enhance(1.1).save(
        root / "train/b/img3_relabelled.png")
    return root


def test_dedup_finds_planted_duplicates_and_only_them(dup_set):
    plan = cleaning.plan_dedup(dup_set, threshold=6)
    moved = {m.path: m.reason for m in plan.moves}
    assert set(moved) == {"train/a/img1_copy.jpg", "val/a/img2_leak.png", "train/b/img3_relabelled.png"}
    assert "leakage" in moved["val/a/img2_leak.png"]
    assert "label conflict" in moved["train/b/img3_relabelled.png"]
    assert plan.stats["groups"] == 3 and plan.stats["cross_split_groups"] == 1


def test_dedup_dry_run_changes_nothing_and_apply_only_moves(dup_set):
    before = _snapshot(dup_set)
    r = _mobilize("data", "dedup", dup_set, "--threshold", "6")
    assert r.returncode == 0, r.stderr
    assert "3 file(s) would move" in r.stdout
    assert _snapshot(dup_set) == before

    r = _mobilize("data", "dedup", dup_set, "--threshold", "6", "--apply", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["applied"] and out["count"] == 3
    after = _snapshot(dup_set)
    # nothing deleted: the same bytes exist, three of them now under .quarantine/dedup-*/
    assert sorted(v for k, v in after.items() if not k.endswith("moves.json")) == sorted(before.values())
    quarantined = [k for k in after if k.startswith(".quarantine/") and not k.endswith("moves.json")]
    assert len(quarantined) == 3 and all(after[k] == before[k.split("/", 2)[2]] for k in quarantined)
    assert len(cleaning.image_files(dup_set)) == len(before) - 3  # readers no longer see them

    r = _mobilize("data", "restore", dup_set)  # dry run
    assert r.returncode == 0 and "3 file(s) would be restored" in r.stdout
    r = _mobilize("data", "restore", dup_set, "--apply")
    assert r.returncode == 0, r.stderr
    restored = {k: v for k, v in _snapshot(dup_set).items() if not k.startswith(".quarantine/")}
    assert restored == before


def _embedding_table(table):
    return lambda paths: np.array([table[Path(p).name] for p in paths], np.float32)


def test_clean_keeps_the_cluster_reclaims_near_and_moves_far(tmp_path):
    root = tmp_path / "set"
    folder = root / "train" / "milk"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    table = {}
    centre = np.array([1.0, 0.0, 0.0])
    for i in range(8):
        table[f"ok{i}.png"] = centre + rng.normal(scale=0.05, size=3)
    table["near.png"] = np.array([1.0, 0.55, 0.0])  # outside the tight cluster, close to it
    table["far.png"] = np.array([0.0, 0.0, 1.0])  # another product
    for name in table:
        Image.new("RGB", (8, 8)).save(folder / name)
    plan = cleaning.plan_clean(root, _embedding_table(table), eps=0.02, min_samples=3, reclaim=0.2)
    assert [m.path for m in plan.moves] == ["train/milk/far.png"]
    assert plan.moves[0].detail["distance"] > 0.2
    strict = cleaning.plan_clean(root, _embedding_table(table), eps=0.02, min_samples=3, reclaim=0.05)
    assert sorted(m.path for m in strict.moves) == ["train/milk/far.png", "train/milk/near.png"]


def test_clean_leaves_a_class_alone_when_the_cluster_is_not_the_class(tmp_path):
    folder = tmp_path / "set" / "train" / "mixed"
    folder.mkdir(parents=True)
    table = {f"x{i}.png": np.eye(6)[i] for i in range(6)}  # nothing alike: no cluster stands for the class
    table.update({f"y{i}.png": np.array([1, 1, 1, 1, 1, 1.0]) + 0.01 * i for i in range(3)})
    for name in table:
        Image.new("RGB", (8, 8)).save(folder / name)
    plan = cleaning.plan_clean(tmp_path / "set", _embedding_table(table), eps=0.05, min_samples=3, reclaim=0.1,
                               max_fraction=0.3)
    assert plan.moves == [] and "left alone" in plan.notes[0]


def test_clean_cli_with_default_descriptor_moves_a_planted_outlier(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "set"
    folder = root / "train" / "carton"
    folder.mkdir(parents=True)
    recipe = _product_recipe(rng, None)
    base = render_product(recipe, rng, 64, catalog=True).astype(np.float32)
    for i in range(8):  # the same catalog shot under slightly different light and noise
        img = np.clip(base * rng.uniform(0.92, 1.08) + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"shot{i}.png")
    other = render_product(_product_recipe(rng, None), rng, 64)  # a different product, on a shelf
    Image.fromarray(other).save(folder / "stray.png")
    before = _snapshot(root)
    r = _mobilize("data", "clean", root, "--json")
    assert r.returncode == 0, r.stderr
    assert [m["path"] for m in json.loads(r.stdout)["moves"]] == ["train/carton/stray.png"]
    assert _snapshot(root) == before
    r = _mobilize("data", "clean", root, "--apply")
    assert r.returncode == 0, r.stderr
    assert not (folder / "stray.png").exists()
    assert len(list((root / ".quarantine").rglob("stray.png"))) == 1


def test_data_cli_bad_input(tmp_path):
    r = _mobilize("data", "dedup", tmp_path / "missing")
    assert r.returncode == 2 and "is not a directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _mobilize("data", "dedup", tmp_path, "--threshold", "99")
    assert r.returncode == 2 and "--threshold" in r.stderr
    (tmp_path / "train" / "a").mkdir(parents=True)
    r = _mobilize("data", "clean", tmp_path, "--target", "onnx")
    assert r.returncode == 2 and "--target needs --model" in r.stderr
    r = _mobilize("data", "clean", tmp_path)
    assert r.returncode == 2 and "holds no images" in r.stderr
