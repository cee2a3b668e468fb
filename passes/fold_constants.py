"""`fold-constants`: evaluate at compile time every node whose inputs are all constant."""

from qonnx.transformation.fold_constants import FoldConstants as QonnxFoldConstants

from flimcc.passbase import Contract, Option, Pass, register


@register
class FoldConstants(Pass):
    """Replaces each node whose inputs are all initializers by an initializer holding its
    result, using qonnx's FoldConstants (which executes the node). Quantizers are kept by
    default: folding a weight `Quant` would hide the integer weights that `fold-weights`
    turns into integer initializers. Contract `float`: the folded value is computed by a
    one-node run, which may round differently from the fused kernel the full graph used."""

    name = "fold-constants"
    summary = "evaluate nodes whose inputs are all constants"
    contract = Contract.FLOAT
    options = (Option("keep-quant", bool, True, "leave Quant nodes unfolded"),)

    def apply(self, model):
        exclude = ["Quant", "IntQuant", "BipolarQuant", "FloatQuant"] if self.keep_quant else []
        # qonnx's FoldConstants keeps only a node's first output: leave multi-output ops alone.
        exclude += sorted({n.op_type for n in model.graph.node if len(n.output) > 1})
        model = model.transform(QonnxFoldConstants(exclude_op_types=exclude), cleanup=True)
        return model, False
