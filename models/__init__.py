"""The model family flimcc compiles: FLI data simulation, lifetime extraction and metrics
(numpy only), and (with the models issue) Seq2Seq / Seq2SeqLite in PyTorch, training,
export and the shipped zoo."""
