"""flimcc's hardware ops: the custom-op domain ``flimcc.hw``.

qonnx resolves a node's domain to the Python module of the same name and looks its
op_type up in that module's ``custom_op`` dict, so a node with ``domain="flimcc.hw"``
and ``op_type="RecurrentLoop"`` is loaded, shape-inferred, executed and estimated by
qonnx and FINN tooling once flimcc is installed. FINN's own analyses count only nodes in
its ``.hls``/``.rtl`` domains; flimcc's reports add these ops by the same method
(see :mod:`flimcc.reports`).
"""

from flimcc.hw.recurrent_loop import RecurrentLoop

DOMAIN = "flimcc.hw"

custom_op = {"RecurrentLoop": RecurrentLoop}

__all__ = ["DOMAIN", "RecurrentLoop", "custom_op"]
