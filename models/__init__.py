"""The model family flimcc compiles: FLI data simulation, lifetime extraction and metrics
(numpy only), Seq2Seq / Seq2SeqLite in PyTorch and Brevitas, training,
export and the shipped zoo.

Modules (the PyTorch ones import torch and Brevitas; this package itself imports neither):

- ``seq2seq``: float ``Seq2Seq`` (teacher, 2 x GRU(128)) and ``Seq2SeqLite`` (student,
  GRU(32)) on ``torch.nn.GRU``; parameter counts against the paper's.
- ``quant_gru``: ``QuantGRU`` from Brevitas primitives with the ONNX GRU's math
  (``linear_before_reset`` 0 or 1, logistic or hard sigmoid, 8/6/4 bits, power-of-two
  scales) and ``QuantSeq2SeqLite``.
- ``train``: ``python -m flimcc.models.train teacher|student ...`` (distillation, QAT,
  checkpoints, resume).
- ``export``: float models to ONNX ``GRU`` nodes, the quantized student to QONNX, and the
  check of a file against PyTorch.
- ``evaluate``: ``python -m flimcc.models.evaluate MODEL.onnx|--zoo``, the fixed test set.
- ``zoo``: the shipped models, ``zoo.names()``, ``zoo.path(name)``, ``zoo.card(name)``.
"""
