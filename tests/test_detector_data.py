"""Detection data: every reader round-trips, bad boxes are skipped and counted in one warning,
splits are disjoint, and augmentation moves boxes with the pixels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilize.data.detection import (BadBoxWarning, DetectionSample, DetectionSet, load_detection, read_coco,
                                     read_voc, read_yolo, split_by_hash, write_coco, write_voc, write_yolo)
from mobilize.data.detection_synthetic import make_synthetic, render_scene
from mobilize.data.detection_transforms import Augment, augment, letterbox, normalize
from mobilize.errors import BadInput
from mobilize.models.detector.deploy import nms, postprocess

BCCD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bccd"
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def small_set(tmp_path) -> DetectionSet:
    """Three images (one without objects) with integer boxes, so every format stores them exactly."""
    rng = np.random.default_rng(0)
    samples = []
    for i, (w, h) in enumerate([(64, 48), (80, 80), (50, 70)]):
        path = tmp_path / "src" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        boxes = [] if i == 2 else [[2, 3, 30, 40], [10, 5, 60, 20]]
        labels = [i % 3, (i + 1) % 3][: len(boxes)]
        samples.append(DetectionSample(f"img{i}", str(path), w, h, np.array(boxes, np.float32), labels))
    return DetectionSet(CLASSES, samples, "memory", str(tmp_path), "train")


def _same(a: DetectionSet, b: DetectionSet, atol: float = 0.0):
    assert a.classes == b.classes
    assert [s.id for s in a.samples] == [s.id for s in b.samples]
    for x, y in zip(a.samples, b.samples):
        assert (x.width, x.height) == (y.width, y.height)
        np.testing.assert_allclose(x.boxes, y.boxes, atol=atol)
        np.testing.assert_array_equal(x.labels, y.labels)


def _read_one_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = fn()
    bad = [w for w in caught if issubclass(w.category, BadBoxWarning)]
    assert len(bad) <= 1, [str(w.message) for w in bad]
    return ds, (str(bad[0].message) if bad else None)


# -- round trips ---------------------------------------------------------------------------
def test_voc_round_trip_and_bad_boxes(small_set, tmp_path):
    root = write_voc(small_set, tmp_path / "voc", "train")
    ds, msg = _read_one_warning(lambda: read_voc(root, "train"))
    assert msg is None
    _same(small_set, DetectionSet(ds.classes, ds.samples, "", "", ""))
    xml = root / "Annotations" / "img0.xml"
    text = xml.read_text()
    obj = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
    extra = (obj.format("cat", 20, 10, 20, 30)  # zero width: degenerate
             + obj.format("dog", 30, 30, 10, 40)  # xmax < xmin: degenerate
             + obj.format("bird", 100, 100, 120, 130)  # beyond a 64 x 48 image: outside
             + obj.format("cat", -5, -5, 10, 60))  # sticks out: clipped, kept
    xml.write_text(text.replace("</annotation>", extra + "</annotation>"))
    ds, msg = _read_one_warning(lambda: read_voc(root, "train"))
    assert msg is not None and "skipped 3 bad boxes: 2 degenerate" in msg and "1 outside the image" in msg
    assert "img0.xml" in msg
    assert (ds.bad_boxes.degenerate, ds.bad_boxes.outside) == (2, 1)
    np.testing.assert_allclose(ds.samples[0].boxes[-1], [0, 0, 10, 48])
    assert len(ds.samples[0].boxes) == 3


def test_coco_round_trip_and_bad_boxes(small_set, tmp_path):
    write_coco(small_set, tmp_path / "coco", "train")
    ds, msg = _read_one_warning(lambda: read_coco(tmp_path / "coco", "train"))
    assert msg is None
    _same(small_set, DetectionSet(ds.classes, ds.samples, "", "", ""))
    ann = tmp_path / "coco" / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    image_id = data["images"][1]["id"]  # 80 x 80
    for k, (bbox, cat) in enumerate([([5, 5, 0, 10], 1), ([5, 5, 10, -3], 2), ([90, 0, 10, 10], 3),
                                     ([0, -10, 10, 5], 1), ([5, 5, 10, 10], 42)]):
        data["annotations"].append({"id": 1000 + k, "image_id": image_id, "category_id": cat, "bbox": bbox,
                                    "area": 1.0, "iscrowd": 0})
    ann.write_text(json.dumps(data))
    ds, msg = _read_one_warning(lambda: read_coco(tmp_path / "coco", "train"))
    assert "skipped 5 bad boxes: 2 degenerate" in msg and "2 outside the image" in msg and "1 with an unknown class" in msg
    assert ds.bad_boxes.to_dict() == {"degenerate": 2, "outside": 2, "unknown_class": 1}
    assert len(ds.samples[1].boxes) == len(small_set.samples[1].boxes)


def test_yolo_round_trip_and_bad_boxes(small_set, tmp_path):
    write_yolo(small_set, tmp_path / "yolo", "train")
    ds, msg = _read_one_warning(lambda: read_yolo(tmp_path / "yolo", "train"))
    assert msg is None
    _same(small_set, DetectionSet(ds.classes, ds.samples, "", "", ""), atol=1e-4)
    lbl = tmp_path / "yolo" / "labels" / "train" / "img1.txt"
    lbl.write_text(lbl.read_text() + "0 0.5 0.5 0 0.2\n"  # zero width: degenerate
                   "1 1.5 0.5 0.2 0.2\n"  # right of the image: outside
                   "7 0.5 0.5 0.2 0.2\n"  # no class 7
                   "2 0.5 0.5 0.4 0.4\n")  # fine
    ds, msg = _read_one_warning(lambda: read_yolo(tmp_path / "yolo", "train"))
    assert "skipped 3 bad boxes: 1 degenerate" in msg and "1 outside the image" in msg and "1 with an unknown class" in msg
    np.testing.assert_allclose(ds.samples[1].boxes[-1], [24, 24, 56, 56], atol=1e-3)


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_auto_format_and_hash_split(fmt, tmp_path):
    """A data set without split files is split by image-id hash: disjoint, complete, the same twice."""
    root = make_synthetic(tmp_path / fmt, fmt, classes=("circle", "ring"), train=24, val=6, size=64, splits=False)
    train = load_detection(root, "auto", "train")
    val = load_detection(root, "auto", "val", classes=train.classes)
    assert train.format == fmt and train.split_rule == "hash"
    ids_t, ids_v = {s.id for s in train.samples}, {s.id for s in val.samples}
    assert ids_t.isdisjoint(ids_v) and len(ids_t | ids_v) == 30 and ids_v
    assert ids_v == {s.id for s in load_detection(root, fmt, "val").samples}
    assert all(split_by_hash(i, 0.15) == "val" for i in ids_v)
    assert sorted(train.classes) == ["circle", "ring"]


@pytest.mark.skipif(not BCCD.is_dir(), reason="needs ../shared/data/bccd")
def test_bccd_reads_with_its_two_degenerate_boxes():
    train, msg_t = _read_one_warning(lambda: load_detection(BCCD, "voc", "train"))
    val, msg_v = _read_one_warning(lambda: load_detection(BCCD, "voc", "val", classes=train.classes))
    assert train.classes == ["Platelets", "RBC", "WBC"]
    assert (len(train), len(val)) == (205, 87)
    assert train.bad_boxes.degenerate + val.bad_boxes.degenerate == 2
    assert train.num_boxes + val.num_boxes == 3943 - 2


# -- bad input -----------------------------------------------------------------------------
def test_load_detection_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_detection(tmp_path / "nope")
    with pytest.raises(BadInput, match="unknown data format 'xml'"):
        load_detection(tmp_path, "xml")
    with pytest.raises(BadInput, match="cannot tell the format"):
        load_detection(tmp_path)
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(BadInput, match="no .xml annotations"):
        load_detection(tmp_path)


# -- transforms ----------------------------------------------------------------------------
def test_augment_moves_boxes_with_pixels():
    """One white square on black: after any scale/crop/flip the box still frames white pixels."""
    img = np.zeros((120, 160, 3), np.uint8)
    img[30:70, 50:110] = 255
    box = np.array([[50, 30, 110, 70]], np.float32)
    cfg = Augment(hflip=0.5, vflip=0.5, brightness=0, contrast=0, saturation=0, hue=0)
    checked = 0
    for seed in range(12):
        out, b, lab = augment(img, box, np.array([0]), 96, np.random.default_rng(seed), cfg)
        assert out.shape == (96, 96, 3)
        if len(b) == 0:
            continue
        x1, y1, x2, y2 = np.round(b[0]).astype(int)
        inside = out[y1 + 1:y2 - 1, x1 + 1:x2 - 1, 0]
        assert inside.size and inside.min() > 200
        border = np.concatenate([out[max(y1 - 2, 0), x1:x2, 0], out[min(y2 + 1, 95), x1:x2, 0]])
        if 2 <= y1 and y2 <= 93:  # a ring just outside the box is not white
            assert border.max() < 200
        checked += 1
    assert checked >= 8


def test_letterbox_and_postprocess_map_back():
    img = np.zeros((200, 400, 3), np.uint8)
    canvas, scale = letterbox(img, 128)
    assert canvas.shape == (128, 128, 3) and scale == (128 / 400, 64 / 200)
    assert (canvas[64:] == 114).all()
    x = normalize(canvas)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32
    boxes = np.array([[10, 10, 42, 26], [11, 10, 42, 26], [60, 0, 70, 10]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]], np.float32)
    b, s, c = postprocess(boxes, scores, 0.5, 0.5, scale=scale, image_size=(400, 200))
    assert list(c) == [0, 1] and np.allclose(s, [0.9, 0.7])
    np.testing.assert_allclose(b[0], [31.25, 31.25, 131.25, 81.25])


def test_nms_keeps_best_and_separates_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert list(nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5)) == [1, 2]
    b, s, c = postprocess(boxes, np.array([[0.5, 0], [0, 0.9], [0.3, 0]], np.float32), 0.1, 0.5)
    assert len(b) == 3  # the overlapping pair is of two classes: both stay


def test_synthetic_scene_boxes_frame_objects():
    img, boxes, labels = render_scene(np.random.default_rng(3), 120, 100, ("square",), max_objects=3)
    assert len(boxes) >= 1 and (boxes[:, 2] <= 120).all() and (boxes[:, 3] <= 100).all()
    for x1, y1, x2, y2 in boxes.astype(int):
        patch = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2].reshape(-1, 3)
        assert np.ptp(patch, axis=0).max() < 40  # a filled square: one colour inside (JPEG-free)
