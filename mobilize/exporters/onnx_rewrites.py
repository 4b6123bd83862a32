"""ONNX graph rewrites for converters that read ONNX (onnx2tf, for TF.js and TFLite).

Working on the graph rather than on nn.Modules catches functional calls (F.gelu, torch.erf)
and ONNX sources alike. Each rewrite returns how many nodes it changed.

- erf_polynomial: Erf becomes a TensorFlow "Flex" op that neither TFLite's builtin
  interpreter nor TF.js can run. Replaced by Abramowitz & Stegun 7.1.26 (max error 1.5e-7),
  built from Abs, Sign, Exp and arithmetic (about 5e-7 once evaluated in float32).
- grouped_conv_split: TF.js has no grouped Conv2D; one Conv per group, then Concat.
- channel_shuffle_as_gather: see the function; onnx2tf turns the depthwise conv after a
  ShuffleNet channel shuffle into a grouped Conv2D, which TF.js cannot run.
- safe_node_names (housekeeping): onnx2tf cannot save names such as "/stages/stages.2/Conv".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class OnnxRewrite:
    name: str
    converters: frozenset[str]
    apply: Callable  # (onnx.ModelProto) -> number of nodes changed
    semantic: bool = True  # False for renames: not listed in the manifest


ONNX_REWRITES: list[OnnxRewrite] = []


def register(name: str, converters: set[str], semantic: bool = True):
    def wrap(fn):
        ONNX_REWRITES.append(OnnxRewrite(name, frozenset(converters), fn, semantic))
        return fn

    return wrap


def apply_onnx_rewrites(model, converter: str) -> list[str]:
    applied = []
    for r in ONNX_REWRITES:
        if converter in r.converters and r.apply(model) and r.semantic:
            applied.append(r.name)
    return applied


class _Namer:
    def __init__(self, model, prefix: str):
        used = {n.name for n in model.graph.node}
        for n in model.graph.node:
            used.update(n.output)
        used.update(i.name for i in model.graph.initializer)
        self.used, self.prefix, self.k = used, prefix, 0

    def __call__(self, hint: str) -> str:
        while True:
            self.k += 1
            name = f"{self.prefix}_{hint}_{self.k}"
            if name not in self.used:
                self.used.add(name)
                return name


def _const(model, namer, value, hint="c") -> str:
    from onnx import numpy_helper

    name = namer(hint)
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    return name


def _replace_nodes(model, op_type: str, build, when=lambda node: True) -> int:
    """Replace every node of `op_type` (for which `when` holds) by the nodes `build(node)`
    returns, in place."""
    graph = model.graph
    new_nodes, count = [], 0
    for node in graph.node:
        if node.op_type == op_type and node.domain in ("", "ai.onnx") and when(node):
            new_nodes.extend(build(node))
            count += 1
        else:
            new_nodes.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


@register("erf_polynomial", {"onnx2tf"})
def erf_polynomial(model) -> int:
    from onnx import helper

    namer = _Namer(model, "erf")
    p, a = 0.3275911, [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429]

    def build(node):
        x, y = node.input[0], node.output[0]
        n = lambda op, ins, **kw: (helper.make_node(op, ins, [namer(op.lower())], name=namer(op), **kw))
        nodes = []

        def add(op, *ins):
            node_ = n(op, list(ins))
            nodes.append(node_)
            return node_.output[0]

        ax = add("Abs", x)
        t = add("Div", _const(model, namer, 1.0), add("Add", _const(model, namer, 1.0),
                                                        add("Mul", ax, _const(model, namer, p))))
        poly = _const(model, namer, a[4])
        for coef in reversed(a[:4]):  # Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
            poly = add("Add", add("Mul", poly, t), _const(model, namer, coef))
        poly = add("Mul", poly, t)
        e = add("Exp", add("Neg", add("Mul", ax, ax)))
        mag = add("Sub", _const(model, namer, 1.0), add("Mul", poly, e))
        nodes.append(helper.make_node("Mul", [add("Sign", x), mag], [y], name=namer("Mul")))
        return nodes

    return _replace_nodes(model, "Erf", build)


def _shapes(model) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _consumers(model) -> dict[str, list]:
    cons: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            cons.setdefault(i, []).append(node)
    return cons


@register("channel_shuffle_as_gather", {"onnx2tf"})
def channel_shuffle_as_gather(model) -> int:
    """Reshape(N,C,H,W -> N,g,C/g,H,W) + Transpose(0,2,1,3,4) + Reshape(back) is a fixed channel
    permutation. onnx2tf loses track of the channel axis through the 5-D detour and then
    emits grouped Conv2D where a depthwise conv was meant, which TF.js cannot run. A Gather on
    the channel axis is the same permutation, in 4-D."""
    from onnx import helper, numpy_helper

    shapes = _shapes(model)
    cons = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    namer = _Namer(model, "shuffle")
    replace: dict[int, object] = {}
    drop: set[int] = set()
    for r1 in model.graph.node:
        if r1.op_type != "Reshape":
            continue
        x, y1 = r1.input[0], r1.output[0]
        sx, s1 = shapes.get(x), shapes.get(y1)
        if not sx or not s1 or len(sx) != 4 or len(s1) != 5 or None in sx or None in s1:
            continue
        n, c, h, w = sx
        if s1[0] != n or s1[3:] != [h, w] or s1[1] * s1[2] != c:
            continue
        t = cons.get(y1, [])
        if len(t) != 1 or t[0].op_type != "Transpose" or y1 in outputs:
            continue
        t = t[0]
        perm = [a.ints for a in t.attribute if a.name == "perm"]
        if not perm or list(perm[0]) != [0, 2, 1, 3, 4] or t.output[0] in outputs:
            continue
        r2 = cons.get(t.output[0], [])
        if len(r2) != 1 or r2[0].op_type != "Reshape" or shapes.get(r2[0].output[0]) != sx:
            continue
        r2 = r2[0]
        g, k = s1[1], s1[2]
        idx = np.array([j * k + i for i in range(k) for j in range(g)], dtype=np.int64)
        name = namer("indices")
        model.graph.initializer.append(numpy_helper.from_array(idx, name))
        gather = helper.make_node("Gather", [x, name], [r2.output[0]], name=namer("Gather"), axis=1)
        nodes = list(model.graph.node)
        replace[nodes.index(r2)] = gather
        drop.update({nodes.index(r1), nodes.index(t)})
    if not replace:
        return 0
    new = []
    for i, node in enumerate(model.graph.node):
        if i in drop:
            continue
        new.append(replace.get(i, node))
    del model.graph.node[:]
    model.graph.node.extend(new)
    return len(replace)


@register("grouped_conv_split", {"onnx2tf"})
def grouped_conv_split(model) -> int:
    """A grouped (not depthwise) Conv becomes Split + one Conv per group + Concat. TF.js has no
    grouped Conv2D ("depth of input (32) must match input depth for filter 8"), and onnx2tf
    emits one for every group count it does not recognise as depthwise."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    namer = _Namer(model, "gconv")

    def is_grouped(node) -> bool:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        if group <= 1 or w is None or len(w.dims) != 4:
            return False
        return w.dims[1] > 1  # one input channel per group is depthwise: leave it

    def build(node):
        group = next(a.i for a in node.attribute if a.name == "group")
        w = numpy_helper.to_array(inits[node.input[1]])
        b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "group"}
        parts = [namer("part") for _ in range(group)]
        split = helper.make_node("Split", [node.input[0], _int64s(model, namer, [w.shape[1]] * group)], parts,
                                 name=namer("Split"), axis=1)
        nodes, outs = [split], []
        per = w.shape[0] // group
        for g, part in enumerate(parts):
            ins = [part, _const(model, namer, w[g * per:(g + 1) * per], "w")]
            if b is not None:
                ins.append(_const(model, namer, b[g * per:(g + 1) * per], "b"))
            outs.append(namer("out"))
            nodes.append(helper.make_node("Conv", ins, [outs[-1]], name=namer("Conv"), **attrs))
        nodes.append(helper.make_node("Concat", outs, [node.output[0]], name=namer("Concat"), axis=1))
        return nodes

    return _replace_nodes(model, "Conv", build, when=is_grouped)


def _int64s(model, namer, values) -> str:
    from onnx import numpy_helper

    name = namer("split")
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


_SAFE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")


@register("safe_node_names", {"onnx2tf"}, semantic=False)
def safe_node_names(model) -> int:
    changed = 0
    for i, node in enumerate(model.graph.node):
        if not node.name or not _SAFE.match(node.name) or node.name.startswith("/"):
            node.name = f"{node.op_type.lower()}_{i}"
            changed += 1
    return changed
