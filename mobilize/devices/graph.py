"""What an ncnn graph costs: per-layer shapes, multiply-accumulates and memory traffic.

The latency predictor needs the same description for a published benchmark architecture and
for a freshly exported artifact, from the .param file alone. Shapes come from ncnn itself:
the graph runs once on this machine with empty weights (`DataReaderFromEmpty`) and every blob
is extracted, so no shape rule is re-implemented here and any layer ncnn knows is covered.
Costs are then read off each layer's parameters and those shapes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import BadInput, ToolFailed

MAGIC = "7767517"
F32, I8 = 4, 1

# layers that move no data at run time (ncnn shares the blob, or they only declare inputs)
FREE = {"Input", "Split", "Noop", "MemoryData", "Dropout"}


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)  # the param tokens as written


@dataclass
class LayerCost:
    """One layer's share of the work: the predictor's unit of cost."""

    name: str
    type: str
    kind: str  # the cost category (see `classify`)
    macs: float  # multiply-accumulates
    bytes: float  # activations read + written (fp32)
    weight_bytes: float  # weights read
    ops: int  # kernel dispatches (a group convolution runs one per group)
    out_shape: list[int]
    in_shapes: list[list[int]] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)  # convolution geometry (cin, cout, k, s, group); Concat/Slice axis

    def to_dict(self) -> dict:
        return asdict(self)


# -- parsing --------------------------------------------------------------------------------
def _value(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_params(tokens: Sequence[str]) -> dict:
    """ncnn `k=v` tokens; `-233xx=n,a,b,...` is the array parameter xx."""
    out: dict = {}
    for tok in tokens:
        if "=" not in tok:
            continue
        k, v = tok.split("=", 1)
        key = int(k)
        if key <= -23300:
            values = v.split(",")
            out[-key - 23300] = [_value(x) for x in values[1:]]
        else:
            out[key] = _value(v)
    return out


def read_param(path: Path | str) -> list[Layer]:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"'{path}' does not exist", "pass an ncnn .param file or an artifact directory")
    lines = path.read_text(errors="replace").split("\n")
    if not lines or lines[0].strip() != MAGIC:
        raise BadInput(f"'{path}' is not an ncnn param file (the first line is not {MAGIC})",
                       "pass a text .param written by pnnx or onnx2ncnn")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        nb, nt = int(parts[2]), int(parts[3])
        tokens = parts[4 + nb + nt:]
        layers.append(Layer(parts[0], parts[1], parts[4:4 + nb], parts[4 + nb:4 + nb + nt], parse_params(tokens),
                            tokens))
    if not layers:
        raise BadInput(f"'{path}' declares no layers")
    return layers


def declared_input_shapes(layers: list[Layer]) -> dict[str, list[int]] | None:
    """Input shapes the param file states itself (Input's w/h/c), as ncnn [c, h, w]; None if any is missing."""
    shapes = {}
    for layer in layers:
        if layer.type != "Input":
            continue
        w, h, c = layer.params.get(0, 0), layer.params.get(1, 0), layer.params.get(2, 0)
        if not w:
            return None
        shapes[layer.tops[0]] = [d for d in (c, h, w) if d] if h else [w]
    return shapes


# -- shapes from ncnn -----------------------------------------------------------------------
def blob_shapes(path: Path | str, input_shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Run the graph once with empty weights; every blob's shape as ncnn sees it (c, h, w order)."""
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.lightmode = False  # keep every intermediate so extracting all of them costs one pass
    net.opt.use_vulkan_compute = False
    if net.load_param(str(path)) != 0:
        raise ToolFailed(f"ncnn could not load '{path}'")
    net.load_model(ncnn.DataReaderFromEmpty())
    shapes = {name: list(shape) for name, shape in input_shapes.items()}
    ex = net.create_extractor()
    try:
        for name, shape in input_shapes.items():
            ex.input(name, filled_mat(shape))
        for blob in net.blobs():
            if blob.name in shapes:
                continue
            ret, mat = ex.extract(blob.name)
            if ret != 0:
                raise ToolFailed(f"ncnn could not compute blob '{blob.name}' of '{Path(path).name}' (code {ret})")
            shapes[blob.name] = _mat_shape(mat)
            del mat
    finally:
        del ex  # the extractor's blobs live in the net's allocators: release them before the net
        net.clear()
    return shapes


def filled_mat(shape: Sequence[int], value: float = 0.01):
    """An ncnn Mat of an ncnn shape ([c, h, w], [h, w], [w] or [c, d, h, w]) that owns its memory.

    A Mat wrapping a numpy array has no reference count, and ncnn in light mode crashes when an
    in-place first layer (a ReLU on the input) works on it; clone() of one crashed too.
    """
    import ncnn

    dims = [int(d) for d in shape]
    if len(dims) == 1:
        m = ncnn.Mat(dims[0])
    elif len(dims) == 2:
        m = ncnn.Mat(dims[1], dims[0])
    elif len(dims) == 3:
        m = ncnn.Mat(dims[2], dims[1], dims[0])
    else:
        m = ncnn.Mat(dims[3], dims[2], dims[1], dims[0])
    m.fill(value)
    return m


def _mat_shape(mat) -> list[int]:
    dims = mat.dims
    if dims == 0:
        return [0]
    if dims == 1:
        return [mat.w]
    if dims == 2:
        return [mat.h, mat.w]
    if dims == 3:
        return [mat.c, mat.h, mat.w]
    return [mat.c, mat.d, mat.h, mat.w]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# -- costs ----------------------------------------------------------------------------------
def _conv_kind(cin: int, cout: int, kw: int, kh: int, sw: int, sh: int, dil: int) -> str:
    """The kernel ncnn picks for a dense convolution of this shape (per group for group convs)."""
    if kw == kh == 1 and sw == sh == 1:
        return "conv1x1"  # sgemm
    if kw == kh == 3 and sw == sh == 1 and dil == 1 and cin >= 16 and cout >= 16:
        return "conv3x3_winograd"
    return "conv"  # im2col + sgemm, or packed direct convolution


def classify(layer: Layer, in_shape: Sequence[int]) -> tuple[str, int]:
    """(cost category, kernel dispatches): which ncnn kernel runs a layer decides what a MAC costs.

    A group convolution runs as one dense convolution per group in ncnn, so it is priced as
    that convolution, with one dispatch per group. An int8 convolution runs the int8 twin of
    the same kernel (winograd, sgemm or im2col): the fp32 kind with "_int8" appended. A matrix
    product with more than one row (a transformer's Gemm, attention) is a GEMM like a 1x1
    convolution; with one row it is a matrix-vector product whose cost is reading the weights
    ("gemv").
    """
    t, p = layer.type, layer.params
    if t in FREE:
        return "free", 0
    cin = int(in_shape[0]) if len(in_shape) >= 3 else 0
    if t in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise",
             "Convolution1D", "Convolution3D"):
        int8 = bool(p.get(8, 0))
        cout = int(p.get(0, 0))
        group = int(p.get(7, 1)) if "DepthWise" in t else 1
        kw = int(p.get(1, 0))
        kh = int(p.get(11, kw))
        sw = int(p.get(3, 1))
        sh = int(p.get(13, sw))
        dil = int(p.get(2, 1))
        if group > 1 and group == cout and (cin in (0, group)):
            return ("dwconv_int8" if int8 else "dwconv"), 1
        if t.startswith("Deconvolution"):
            kind = "conv"
        else:
            kind = _conv_kind(cin // group if cin else 16, cout // group, kw, kh, sw, sh, dil)
        return (kind + "_int8" if int8 else kind), group
    if t in ("InnerProduct", "Gemm", "MatMul"):
        rows = int(in_shape[-2]) if len(in_shape) >= 2 else 1
        if t == "InnerProduct" and len(in_shape) >= 3:
            rows = 1  # flattens a C,H,W blob into one vector
        return ("conv1x1" if rows > 1 else "gemv"), 1
    if t in ("MultiHeadAttention", "SDPA"):
        return "conv1x1", 1
    return "elementwise", 1


def layer_macs(layer: Layer, ins: list[list[int]], outs: list[list[int]]) -> float:
    t, p = layer.type, layer.params
    out = outs[0] if outs else [0]
    in0 = ins[0] if ins else [0]
    if t in ("Convolution", "ConvolutionDepthWise", "Convolution1D", "Convolution3D"):
        wsize = p.get(6, 0)
        spatial = _numel(out[1:]) if len(out) > 1 else 1
        return float(spatial * wsize)
    if t in ("Deconvolution", "DeconvolutionDepthWise"):
        return float((_numel(in0[1:]) if len(in0) > 1 else 1) * p.get(6, 0))
    if t == "InnerProduct":
        rows = in0[-2] if len(in0) == 2 else 1  # a 2-D input is a batch of rows
        return float(rows * p.get(2, 0))
    if t in ("Gemm", "MatMul"):
        k = in0[-1] if in0 else 0
        if t == "Gemm" and p.get(2, 0):  # transA: A is K x M
            k = in0[-2] if len(in0) >= 2 else k
        return float(_numel(out) * k)
    if t == "MultiHeadAttention":
        embed = p.get(0, 0)
        q = ins[0] if ins else [0]
        kv = ins[1] if len(ins) > 1 else q
        sq = q[-2] if len(q) >= 2 else 1
        sk = kv[-2] if len(kv) >= 2 else 1
        kdim = kv[-1] if kv else embed
        proj = sq * embed * (q[-1] if q else embed) + 2 * sk * embed * kdim + sq * embed * embed
        return float(proj + 2 * sq * sk * embed)
    return 0.0


def weight_bytes(layer: Layer) -> float:
    t, p = layer.type, layer.params
    if t in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise",
             "Convolution1D", "Convolution3D"):
        return float(p.get(6, 0) * (I8 if p.get(8, 0) else F32))
    if t == "InnerProduct":
        return float(p.get(2, 0) * (I8 if p.get(8, 0) else F32))
    if t == "MultiHeadAttention":
        return float(4 * p.get(2, 0) * F32)
    if t == "Gemm":
        k, n = p.get(9, 0), p.get(8, 0)
        return float(k * n * F32) if p.get(5, 0) else 0.0
    return 0.0


def layer_attrs(layer: Layer, ins: list[list[int]]) -> dict:
    """What the predictor needs of a layer beyond its shapes: a convolution's geometry, the axis a
    Concat or Slice works along."""
    p = layer.params
    if layer.type == "Concat":
        return {"axis": int(p.get(0, 0))}
    if layer.type == "Slice":
        return {"axis": int(p.get(1, 0))}
    if "onvolution" not in layer.type:
        return {}
    cin = ins[0][0] if ins and len(ins[0]) >= 3 else 0
    kw = int(p.get(1, 0))
    return {"cin": int(cin), "cout": int(p.get(0, 0)), "k": kw, "kh": int(p.get(11, kw)), "s": int(p.get(3, 1)),
            "group": int(p.get(7, 1)) if "DepthWise" in layer.type else 1, "int8": bool(p.get(8, 0))}


def layer_costs(layers: list[Layer], shapes: dict[str, list[int]]) -> list[LayerCost]:
    costs = []
    for layer in layers:
        ins = [shapes.get(b, [0]) for b in layer.bottoms]
        outs = [shapes.get(t, [0]) for t in layer.tops]
        kind, ops = classify(layer, ins[0] if ins else [])
        moved = 0.0 if kind == "free" else F32 * (sum(_numel(s) for s in ins) + sum(_numel(s) for s in outs))
        costs.append(LayerCost(layer.name, layer.type, kind, layer_macs(layer, ins, outs), moved,
                               weight_bytes(layer), ops, outs[0] if outs else [], ins, layer_attrs(layer, ins)))
    return costs


@dataclass
class Graph:
    """An analysed ncnn graph: where it came from, its input shapes and every layer's cost."""

    name: str
    input_shapes: dict[str, list[int]]
    layers: list[LayerCost]

    @property
    def macs(self) -> float:
        return sum(c.macs for c in self.layers)

    @property
    def bytes(self) -> float:
        return sum(c.bytes + c.weight_bytes for c in self.layers)

    def to_dict(self) -> dict:
        return {"name": self.name, "input_shapes": self.input_shapes, "macs": self.macs, "bytes": self.bytes,
                "layers": [c.to_dict() for c in self.layers]}


def parse_shape(text: str) -> list[int]:
    """'1,3,224,224' (NCHW, batch 1) or '3,224,224' (ncnn c,h,w) -> ncnn [c, h, w]."""
    dims = [int(d) for d in re.split(r"[,x ]+", text.strip()) if d]
    if len(dims) == 4:
        if dims[0] != 1:
            raise BadInput(f"input shape {text}: ncnn runs batch 1", "give 1,C,H,W or C,H,W")
        dims = dims[1:]
    if not dims or any(d <= 0 for d in dims):
        raise BadInput(f"input shape '{text}' is not a list of positive integers", "e.g. 1,3,224,224")
    return dims


def analyse(path: Path | str, input_shapes: dict[str, list[int]] | Sequence[Sequence[int]] | None = None,
            name: str | None = None) -> Graph:
    """Shapes and per-layer costs of an ncnn .param; input shapes from the file or the caller."""
    path = Path(path)
    layers = read_param(path)
    inputs = [layer.tops[0] for layer in layers if layer.type == "Input"]
    if input_shapes is None:
        shapes = declared_input_shapes(layers)
        if shapes is None:
            raise BadInput(f"'{path.name}' does not state its input shape",
                           "pass --input-shape C,H,W (or 1,C,H,W), once per input")
    elif isinstance(input_shapes, dict):
        shapes = {k: list(v) for k, v in input_shapes.items()}
    else:
        given = [list(s) for s in input_shapes]
        if len(given) != len(inputs):
            raise BadInput(f"'{path.name}' has {len(inputs)} inputs but {len(given)} input shapes were given")
        shapes = dict(zip(inputs, given))
    missing = [i for i in inputs if i not in shapes]
    if missing:
        raise BadInput(f"no input shape for blob(s) {', '.join(missing)} of '{path.name}'")
    all_shapes = blob_shapes(path, shapes)
    return Graph(name or path.name.removesuffix(".param"), shapes, layer_costs(layers, all_shapes))
