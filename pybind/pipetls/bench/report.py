"""``pipetls bench``'s report: the results table, one line per row, and the
plot (matplotlib, or an SVG written here)."""

from __future__ import annotations

import importlib
import statistics
from typing import Any

from .model import MAX_REL_WIDTH, BenchResult

__all__ = ["print_results", "plot", "plot_check", "plot_svg", "row_line"]


# counters of today's engine shown in the busy table; any other counter
# (not hist.* or lane.*) is shown beside them under its own name
_BUSY_KNOWN = ("batches", "pipelined_batches", "inline_batches", "records", "wake_calls",
               "worker_sleeps", "caller_sleeps", "caller_wakes")
_SHORT = {"pipelined_batches": "pipelined", "inline_batches": "inline", "wake_calls": "wakes",
          "worker_sleeps": "w.sleeps", "caller_sleeps": "c.sleeps", "caller_wakes": "c.wakes"}
_NOT_SHOWN = ("pipetls.stats", "lanes", "workers", "inline_below", "bytes", "failed_batches",
              "crypto_ns", "batch_ns", "stream_calls", "stream_bytes")


def _speedup(r: BenchResult) -> str:
    text = "%.2fx" % r.speedup
    if r.speedup_lo is not None and r.speedup_hi is not None:
        text += " [%.2f-%.2f]" % (r.speedup_lo, r.speedup_hi)
    return text


def _eff(r: BenchResult) -> str:
    return "%.0f%%%s" % (100 * r.efficiency, "*" if r.efficiency_clamped else "")


def row_line(r: BenchResult) -> str:
    """One finished row in a line (the progress log)."""
    what = "%s %s mp=%d lanes=%d" % (r.scenario, r.cipher, r.max_pipelines, r.lanes)
    if r.scenario == "busy":
        what += " connections=%d" % r.connections
    return "%s: %s%s, stock %.3f %s, pipetls %.3f %s, eff. %s (%d pairs)" % (
        what, _speedup(r), " (%s)" % r.verdict if r.verdict else "", r.stock_gbps, r.unit,
        r.pipetls_gbps, r.unit, _eff(r), len(r.pairs) or len(r.stock_reps))


def print_results(console: Any, doc: dict[str, Any], results: list[BenchResult], tls: str,
                  pairs: int) -> None:
    """The table of ``results`` and the legend, on ``console`` (rich)."""
    from rich.table import Table

    table = Table(title="pipetls bench (%s, %d CPUs, TLS %s; medians of %d interleaved pairs)"
                  % (doc["machine"]["openssl"], doc["machine"]["cpus"], tls, pairs))
    busy = [r for r in results if r.scenario == "busy"]
    cols = ["scenario", "cipher", "mp", "lanes"] + (["conns"] if busy else []) + [
        "baseline", "stock", "pipetls", "speedup [95%]", "verdict", "bound", "eff.", "rec/batch"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("scenario", "cipher", "baseline",
                                                         "verdict") else "right")
    for r in results:
        row = [r.scenario, r.cipher, str(r.max_pipelines), str(r.lanes)]
        if busy:
            row.append(str(r.connections))
        row += [r.baseline, "%.3f %s" % (r.stock_gbps, r.unit),
                "%.3f %s" % (r.pipetls_gbps, r.unit), _speedup(r), r.verdict,
                "%.2fx" % r.bound, _eff(r), "%.2f" % r.mean_batch if r.batches else ""]
        table.add_row(*row)
    console.print(table)
    if busy:
        _busy_table(console, busy)
    reads = [r for r in results if r.scenario == "read" and r.batches]
    if reads:
        console.print("read: mean records per read batch (engine statistics, records / "
                      "batches): " + ", ".join(
                          "%s mp=%d %.2f" % (r.cipher, r.max_pipelines, r.mean_batch)
                          for r in reads))
    stolen = [r for r in results if r.steal_fraction and not r.control]
    if stolen:
        console.print("steal: the share of the CPUs' time the hypervisor gave to other work "
                      "while a row's pairs ran (/proc/stat): " + ", ".join(
                          "%s %s mp=%d %.0f%%" % (r.scenario, r.cipher, r.max_pipelines,
                                                  100 * (r.steal_fraction or 0.0))
                          for r in stolen))
    shares = [r for r in results if r.of_control is not None]
    if shares:
        console.print(
            "control (--control): a third side in every pair, stock on LANES connections at "
            "once (one process each, each moving the pair's bytes); its row's speedup is the ceiling "
            "these cores give in the same pairs. pipetls reached, of the control's "
            "throughput (median of control time / pipetls time [95%]): " + ", ".join(
                "%s %s mp=%d lanes=%d %.0f%% [%.0f-%.0f]"
                % (r.scenario, r.cipher, r.max_pipelines, r.lanes, 100 * (r.of_control or 0),
                   100 * (r.of_control_lo or 0), 100 * (r.of_control_hi or 0))
                for r in shares))
    evp = [r for r in results if r.scenario == "evp"]
    if evp:
        console.print(
            "evp: %s messages of %d bytes per pipeline (mp = pipes), EVP_CipherPipeline* "
            "with the pipetls provider against the default provider one message at a time; "
            "speedup = median of %d interleaved pairs [%.0f%% bootstrap interval], both "
            "loops timed in C, nothing subtracted; control = stock's loop on plain threads "
            "in the same pairs, the ceiling this machine allows now"
            % (evp[0].max_pipelines, evp[0].write_size, len(evp[0].stock_reps),
               100 * (evp[0].interval_confidence or 0)))
    console.print("speedup = median over the pairs of stock time / pipetls time [95%% bootstrap "
                  "interval] (latency: stock us / pipetls us); verdict: faster / slower (the "
                  "interval above / below 1.0 and at most %.0f%% of the median wide), "
                  "'..., wide' (direction known, size not), 'straddles 1.0' (no difference "
                  "resolved), 'too wide' (no conclusion); bound = Amdahl bound L*T/(L*T_serial + T - T_serial), "
                  "T = stock time, T_serial = the engine's time outside record batches; "
                  "eff. = median of the pairs' speedup / bound, * = above 100%% and clamped"
                  % (100 * MAX_REL_WIDTH))


def _busy_table(console: Any, rows: list[BenchResult]) -> None:
    from rich.table import Table

    table = Table(title="busy: the engine's counters over the pipetls side of all pairs; "
                  "cores = the process's CPU time / wall time (median of the pairs)")
    for col in ("cipher", "mp", "lanes", "conns", "cores stock", "cores pipetls",
                "rec/batch") + _BUSY_KNOWN + ("other counters (not 0)",):
        table.add_column(_SHORT.get(col, col),
                         justify="left" if col.startswith(("cipher", "other")) else "right",
                         overflow="fold")
    for r in rows:
        # counters this version does not name (a later engine's): by name
        other = " ".join("%s=%d" % (k, v) for k, v in sorted(r.counters.items())
                         if v and k not in _BUSY_KNOWN and k not in _NOT_SHOWN
                         and not k.startswith(("hist.", "lane.")))
        table.add_row(r.cipher, str(r.max_pipelines), str(r.lanes), str(r.connections),
                      "%.2f" % _cores(r, "stock"), "%.2f" % _cores(r, "pipetls"),
                      "%.2f" % r.mean_batch, *(str(r.counters.get(k, 0)) for k in _BUSY_KNOWN),
                      other)
    console.print(table)


def _cores(r: BenchResult, side: str) -> float:
    """Median over the pairs of CPU seconds / wall seconds on one side."""
    xs = [p[side + "_cpu_s"] / p[side + "_s"] for p in r.pairs
          if p.get(side + "_s") and side + "_cpu_s" in p]
    return statistics.median(xs) if xs else 0.0


def _series(results: list[BenchResult]) -> dict[str, list[BenchResult]]:
    """Rows by what stays fixed along a line against lanes."""
    out: dict[str, list[BenchResult]] = {}
    for r in results:
        if r.scenario in ("latency", "evp") or r.control:
            continue
        name = "%s %s mp=%d" % (r.scenario, r.cipher, r.max_pipelines)
        if r.scenario == "busy":
            name += " conns=%d" % r.connections
        out.setdefault(name, []).append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r.lanes)
    return out


def plot_svg(results: list[BenchResult], path: str) -> None:
    """Speedup against lanes, one line per scenario / cipher /
    max_pipelines (/ connections), the 95 % interval as a whisker: an SVG
    written without any plotting library."""
    series = _series(results)
    if not series:
        raise SystemExit("pipetls bench --plot: no write/read/loopback/busy rows to plot")
    rows = [r for rs in series.values() for r in rs]
    lanes = sorted({r.lanes for r in rows})
    top = max(max(r.speedup_hi or r.speedup for r in rows), 1.0) * 1.1
    w, h, left, right, top_m, bottom = 900, 480, 60, 330, 30, 50
    pw, ph = w - left - right, h - top_m - bottom

    def x(lane: int) -> float:
        if len(lanes) == 1:
            return left + pw / 2
        return left + pw * lanes.index(lane) / (len(lanes) - 1)

    def y(v: float) -> float:
        return top_m + ph * (1 - v / top)

    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" font-size="13">speedup vs stock (median of pairs, 95 %% '
           'interval) against lanes</text>' % left]
    step = 0.5 if top <= 4 else 1.0 if top <= 10 else 2.0
    v = 0.0
    while v <= top:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>'
                   % (left, left + pw, y(v), y(v), "#888" if v == 1.0 else "#eee"))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.1fx</text>' % (left - 5, y(v) + 4, v))
        v += step
    for lane in lanes:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>'
                   % (x(lane), top_m + ph + 16, lane))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">lanes</text>'
               % (left + pw / 2, top_m + ph + 36))
    for i, (name, rs) in enumerate(sorted(series.items())):
        c = colours[i % len(colours)]
        pts = " ".join("%.1f,%.1f" % (x(r.lanes), y(r.speedup)) for r in rs)
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (c, pts))
        for r in rs:
            if r.speedup_lo is not None and r.speedup_hi is not None:
                out.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>'
                           % (x(r.lanes), x(r.lanes), y(r.speedup_lo), y(r.speedup_hi), c))
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>'
                       % (x(r.lanes), y(r.speedup), c))
        ly = top_m + 14 * i
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>'
                   % (left + pw + 20, ly, c))
        out.append('<text x="%d" y="%d">%s</text>' % (left + pw + 35, ly + 9,
                                                       name.replace("&", "&amp;")))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def plot_check(path: str) -> None:
    """Before a run: SystemExit when ``path`` needs matplotlib and it is
    missing (so that the run is not wasted)."""
    if not path.lower().endswith(".svg"):
        _pyplot()


def _pyplot() -> Any:
    try:
        # imported by name: an optional dependency, typed or not
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit(
            "pipetls bench --plot FILE.png needs matplotlib: pip install 'pipetls[plot]' "
            "(or write FILE.svg, which needs nothing)") from None


def plot(results: list[BenchResult], path: str) -> None:
    """FILE.svg: :func:`plot_svg` (no dependency); any other name: matplotlib."""
    if path.lower().endswith(".svg"):
        plot_svg(results, path)
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in results if r.scenario in ("write", "read", "loopback", "busy")
            and not r.control]
    if not rows:
        raise SystemExit("pipetls bench --plot: no write/read/loopback rows to plot")
    top_mp = max(r.max_pipelines for r in rows)
    top_lanes = max(r.lanes for r in rows)
    # left: against lanes at the largest max_pipelines; right: against
    # max_pipelines at the most lanes; one line per scenario and cipher
    for key, fixed, value, ax in (("lanes", "max_pipelines", top_mp, axes[0]),
                                  ("max_pipelines", "lanes", top_lanes, axes[1])):
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in rows:
            if getattr(r, fixed) == value:
                conns = " conns=%d" % r.connections if r.scenario == "busy" else ""
                series.setdefault((r.scenario, r.cipher + conns), []).append(
                    (getattr(r, key), r.speedup))
        for (scen, cipher), pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="%s %s" % (scen, cipher))
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("speedup vs stock")
        ax.set_title("%s = %d" % (fixed, value), fontsize=9)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
