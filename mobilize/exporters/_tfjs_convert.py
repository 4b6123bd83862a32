"""tensorflowjs_converter, run with one bug fixed (this module runs in its own process).

The converter's `normalize_bias_add` turns *any* Add after a Conv2D/MatMul into BiasAdd, even
when the other operand is a full tensor (a ResNet residual). Grappler then fuses it as a
"bias" of rank 4, and TF.js refuses to run the model ("FusedConv2D only supports rank-1
bias but got rank 4"). Here an Add becomes a BiasAdd only when its other operand is a rank-1
constant, which is what a bias is.

usage: python -m mobilize.exporters._tfjs_convert [tensorflowjs_converter arguments...]
"""

from __future__ import annotations

import sys

FUSABLE_PARENTS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")


def normalize_bias_add_op(input_graph_def):
    from tensorflowjs.converters import graph_rewrite_util as util

    nodes = {}
    for node in input_graph_def.node:
        if node.name in nodes:
            raise ValueError("Duplicate node names detected for ", node.name)
        nodes[node.name] = node
    for node in input_graph_def.node:
        if node.op not in ("AddV2", "Add") or len(node.input) < 2:
            continue
        parent = util.node_from_map(nodes, node.input[0])
        other = util.node_from_map(nodes, node.input[1])
        if (parent.op in FUSABLE_PARENTS
                and len(util.get_output_node_names(nodes, node.input[0])) == 1
                and other.op == "Const"
                and len(other.attr["value"].tensor.tensor_shape.dim) == 1):
            node.op = "BiasAdd"
            node.attr["data_format"].s = b"NHWC"
    return input_graph_def


def main(argv: list[str]) -> None:
    from tensorflowjs.converters import converter, normalize_bias_add

    normalize_bias_add.normalize_bias_add_op = normalize_bias_add_op
    converter.convert(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
