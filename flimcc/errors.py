"""Errors a user sees.

Every failure caused by the user's input (a file, a pipeline string, a target name, a
model flimcc cannot handle) is a `FlimccError`: its message is one line that names the
file, node, attribute or pass at fault. The command line prints it and exits 2; anything
else is a bug in flimcc and keeps its traceback.
"""


class FlimccError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""


class ModelLoadError(FlimccError):
    """A model file (or bytes, or proto) that cannot be loaded as a usable ONNX graph."""


class PipelineSyntaxError(FlimccError):
    """A textual pipeline that does not parse, names an unknown pass or a bad option."""


class UnsupportedError(FlimccError):
    """A node, attribute or graph shape that a pass or executor refuses on purpose."""


class VerificationError(FlimccError):
    """A pass broke its numeric contract against the golden run or the stage before it."""


class TargetError(FlimccError):
    """An unknown target, or a design that does not fit the target."""
