"""flimcc's hardware ops: the custom-op domain ``flimcc.hw``.

qonnx resolves a node's domain to the Python module of the same name and looks its
op_type up in that module's ``custom_op`` dict, so a node with ``domain="flimcc.hw"``
and ``op_type="RecurrentLoop"`` is loaded, shape-inferred, executed and estimated by
qonnx and FINN tooling once flimcc is installed. FINN's own analyses count only nodes in
its ``.hls``/``.rtl`` domains; flimcc's reports add these ops by the same method
(see :mod:`flimcc.reports`).
"""

import finn.custom_op.fpgadataflow.rtl as _finn_rtl

from flimcc.hw.duplicatestreams_rtl import DuplicateStreams_rtl
from flimcc.hw.elementwise_int_rtl import IntElementwiseAdd_rtl, IntElementwiseMul_rtl, IntElementwiseSub_rtl
from flimcc.hw.mvau_lut_rtl import MVAULut_rtl
from flimcc.hw.recurrent_loop import RecurrentLoop
from flimcc.hw.recurrent_loop_rtl import RecurrentLoop_rtl
from flimcc.hw.requant_int_rtl import IntRequant_rtl
from flimcc.hw.streamingsplit_rtl import StreamingSplit_rtl

#: flimcc's RTL variants of FINN ops, in FINN's own RTL domain: FINN's SpecializeLayers picks
#: them (FINN has only HLS versions), and its stitching accepts only FINN's domains.
FINN_RTL_OPS = {"DuplicateStreams_rtl": DuplicateStreams_rtl, "StreamingSplit_rtl": StreamingSplit_rtl,
                "IntElementwiseAdd_rtl": IntElementwiseAdd_rtl, "IntElementwiseSub_rtl": IntElementwiseSub_rtl,
                "IntElementwiseMul_rtl": IntElementwiseMul_rtl, "IntRequant_rtl": IntRequant_rtl,
                "MVAULut_rtl": MVAULut_rtl,
                # the loop itself, as handed to FINN's build (flimcc.finn_flow.for_finn)
                "RecurrentLoop_rtl": RecurrentLoop_rtl}
for _name, _cls in FINN_RTL_OPS.items():
    _finn_rtl.custom_op.setdefault(_name, _cls)

DOMAIN = "flimcc.hw"

custom_op = {"RecurrentLoop": RecurrentLoop}

__all__ = ["DOMAIN", "FINN_RTL_OPS", "DuplicateStreams_rtl", "RecurrentLoop", "StreamingSplit_rtl", "custom_op"]
