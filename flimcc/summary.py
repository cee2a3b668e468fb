"""The terminal summary of `flimcc compile`: what a person reads at a glance."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _bar(used: float, total: float, width: int = 24) -> str:
    frac = used / total if total else 0.0
    filled = min(width, round(frac * width))
    colour = "green" if frac <= 0.7 else "yellow" if frac <= 0.85 else "red"
    return f"[{colour}]{'█' * filled}[/{colour}]{'·' * (width - filled)}"


def print_summary(console: Console, s: dict) -> None:
    if s.get("target") == "cpu":
        console.print(f"[bold]cpu[/bold] (onnxruntime): {s['pixels_per_second']:,.0f} pixels/s measured on "
                      f"{s['measured_on_pixels']:,} pixels; max abs err vs golden "
                      f"{s['verification']['max_abs_err']:.2e}")
        console.print(f"wrote {s['output_dir']}/")
        return
    console.print(f"[bold]{s['model']}[/bold] -> [bold]{s['target']}[/bold] ({s['fpga_part']}, {s['clock_mhz']:g} MHz)")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("resource", "", "used", "board", "%"):
        table.add_column(col, justify="right" if col in ("used", "board", "%") else "left")
    for k in ("LUT", "BRAM_18K", "URAM", "DSP"):
        total = s["board_resources"].get(k) or 0
        used = s["resources"][k]
        pct = f"{100 * used / total:.0f}%" if total else "-"
        table.add_row(k, _bar(used, total) if total else "", f"{used:,.0f}", f"{total:,}", pct)
    console.print(table)
    console.print(f"fits: {'[green]yes[/green]' if s['fits'] else '[red]no[/red]'} (budget {100 * s['headroom']:.0f}% of the board)")
    ratio = s.get("cycles_vs_one_mac_per_dsp")
    dsps = s["board_resources"].get("DSP")
    # The reference design: every DSP of the board doing one multiply-accumulate per cycle.
    console.print(f"throughput (estimate): [bold]{s['pixels_per_second']:,.0f} pixels/s[/bold] = {s['cycles_per_pixel']:,.0f} cycles/pixel"
                  + (f" ({100 * ratio:.0f}% of the {s['one_mac_per_dsp_cycles_per_pixel']:,.0f} cycles of one MAC per "
                     f"cycle on each of the {dsps:,} DSPs)" if ratio else ""), soft_wrap=True)
    console.print(f"pixels interleaved: P = {s['pixel_parallelism']}; bottleneck: {s['bottleneck']}; "
                  f"latency {s['latency_ms_per_pixel_batch']:.2f} ms per batch of P", soft_wrap=True)
    v = s["verification"]
    err = v.get("max_abs_err")
    if err is None:
        console.print("verification: skipped (--verify 0)")
    else:
        verdict = "[green]bit-exact[/green]" if v["bit_exact"] else "[red]NOT bit-exact[/red]"
        console.print(f"verification: {verdict} with the integer stage on {v['samples']} inputs; "
                      f"max abs err vs {v['golden']}: {err:.2e}", soft_wrap=True)
    if any(v.startswith("hdl/") for v in (s.get("hdl") or {}).values()):
        console.print(f"loops as RTL in hdl/; FIFO depths {s.get('fifo_depths', '')}", soft_wrap=True)
    sim = s.get("rtlsim")
    if sim:
        est = sim.get("estimated_cycles_per_pixel")
        verdict = "[green]bit-exact[/green]" if sim["bit_exact"] else "[red]NOT bit-exact[/red]"
        console.print(f"RTL simulation ({sim['simulator']}): loops {verdict} with the executor on {sim['pixels']} "
                      f"pixels; measured {sim['cycles_per_pixel']:,.0f} cycles/pixel on the "
                      f"{sim['cycles_measured_on'].split(' (')[0]}"
                      + (f" = {sim['cycles_per_pixel'] / est:.2f} x the estimate" if est else ""), soft_wrap=True)
    console.print(f"wrote {s['output_dir']}/", soft_wrap=True)
