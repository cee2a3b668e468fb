"""`canonicalize`: the normal form every other pass may assume."""

from qonnx.transformation.infer_datatypes import InferDataTypes

from flimcc.ir import canonicalize as canonicalize_model
from flimcc.passbase import Contract, Pass, register


@register
class Canonicalize(Pass):
    """Names unnamed or duplicate-named nodes, infers every tensor's shape and qonnx
    DataType. It rewrites no computation, so outputs stay bit-identical. `flimcc.load`
    already does this; the pass exists to restore the form after hand-made edits."""

    name = "canonicalize"
    summary = "unique readable node names, inferred shapes and datatypes"
    contract = Contract.EXACT

    def apply(self, model):
        model = canonicalize_model(model).transform(InferDataTypes(), cleanup=False)
        return model, False
