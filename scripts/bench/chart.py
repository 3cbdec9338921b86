#!/usr/bin/env python3
"""The bench harness's shared output (scripts/bench.sh; python3 stdlib only).

  chart.py result  --out DIR --name NAME --ratio X --rows JSON [--unit U] [--what W] [--run ID]
      writes DIR/NAME.json (one scenario's result)
  chart.py summary --out DIR [--run ID] [--failed NAME ...]
      merges DIR/*.json of run ID into DIR/summary.json, draws DIR/summary.svg,
      prints the side-by-side table
  chart.py svg SUMMARY.json OUT.svg
      draws the chart of an existing summary
  chart.py compare OLD.json NEW.json [--threshold 0.05] [--only-new]
      old/new ratio per scenario; exit status 1 when one dropped by more
      than the threshold (REGRESSION) or NEW lists a broken scenario
  chart.py check FILE.json
      exit status 2 unless FILE is a summary or a scenario result

A ratio is always "simgate / best peer", higher is better; a scenario
without a peer has ratio null (printed n/a) and a "note" saying why.
"""

import argparse
import datetime
import glob
import json
import math
import os
import platform
import subprocess
import sys
from xml.sax.saxutils import escape

SCHEMA = 1
# Non-result files in the output directory.
NOT_RESULTS = {"summary.json"}


def parse_ratio(text):
    """A ratio as printed by the scenarios: a number, or nan/n/a/-/empty."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    if math.isnan(x) or math.isinf(x):
        return None
    return round(x, 4)


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.3f}"


def machine():
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "nproc": nproc,
        "kernel": platform.release(),
        "loadavg": load,
        "cpu": cpu,
        "host": platform.node(),
    }


def git_rev():
    """The commit measured, '+dirty' when the tree differs (read-only git)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, cwd=here).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_result(a):
    try:
        rows = json.loads(a.rows)
    except json.JSONDecodeError as e:
        sys.exit(f"chart.py: {a.name}: rows are not JSON ({e}): {a.rows[:200]}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        sys.exit(f"chart.py: {a.name}: rows must be a JSON array of objects")
    if not a.name or "/" in a.name or a.name.startswith("."):
        sys.exit(f"chart.py: bad scenario name {a.name!r}")
    doc = {
        "schema": SCHEMA,
        "scenario": a.name,
        "ratio": parse_ratio(a.ratio),
        "higher_is_better": True,
        "unit": a.unit,
        "what": a.what,
        "rows": rows,
        "machine": machine(),
        "time": now_utc(),
        "commit": git_rev(),
        "run": a.run or None,
    }
    if a.note:
        doc["note"] = a.note
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, a.name + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_results(path):
    """The results of a summary.json or of one scenario's NAME.json."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, dict) and isinstance(doc.get("results"), list):
        return doc, doc["results"]
    if isinstance(doc, dict) and "scenario" in doc:
        return {"machine": doc.get("machine"), "time": doc.get("time")}, [doc]
    raise ValueError(f"{path}: neither a summary (results: [...]) nor a scenario result")


def cmd_summary(a):
    results = []
    # In the order they ran.
    for path in sorted(glob.glob(os.path.join(a.out, "*.json")), key=os.path.getmtime):
        if os.path.basename(path) in NOT_RESULTS:
            continue
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"chart.py: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or "scenario" not in doc:
            continue
        if a.run and doc.get("run") != a.run:
            continue
        results.append(doc)
    summary = {
        "schema": SCHEMA,
        "run": a.run or None,
        "time": now_utc(),
        "machine": machine(),
        "commit": git_rev(),
        "failed": a.failed or [],
        "results": results,
    }
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    svg_path = os.path.join(a.out, "summary.svg")
    with open(svg_path, "w") as f:
        f.write(render_svg(summary))
    print_table(summary)
    print(f"\nwritten: {path}, {svg_path}")


def print_table(summary):
    results = summary["results"]
    print("summary: ratio = simgate / best peer, same machine, same run; higher is better")
    w = max([len("scenario")] + [len(r["scenario"]) for r in results])
    print(f"{'scenario':<{w}}  {'ratio':>7}  {'flag':<6}  what")
    for r in results:
        x = r.get("ratio")
        flag = "" if x is None else ("<0.9" if x < 0.9 else ("<1.0" if x < 1.0 else ""))
        what = r.get("what") or ""
        if x is None and r.get("note"):
            what = (what + "; " if what else "") + r["note"]
        print(f"{r['scenario']:<{w}}  {fmt_ratio(x):>7}  {flag:<6}  {what}")
    for name in summary.get("failed") or []:
        print(f"{name:<{w}}  {'-':>7}  BROKEN  the scenario exited non-zero (see its log)")
    m = summary.get("machine") or {}
    print(f"machine: {m.get('nproc')} cores ({m.get('cpu')}), Linux {m.get('kernel')}, "
          f"load average now {m.get('loadavg')}; commit {summary.get('commit')}; {summary.get('time')}")


def render_svg(summary):
    """A horizontal bar per scenario, lines at 1.0 and 0.9."""
    results = summary.get("results") or []
    failed = summary.get("failed") or []
    rows = [(r.get("scenario", "?"), r.get("ratio"), r.get("what") or "",
             r.get("note") or "", False) for r in results]
    rows += [(name, None, "", "the scenario exited non-zero", True) for name in failed]
    ratios = [x for _, x, _, _, _ in rows if isinstance(x, (int, float))]
    # At least 0 .. 1.2 so the reference lines sit in the same place for
    # ratios around 1; more when a scenario beats its peer by far.
    top = max([1.2] + [x * 1.08 for x in ratios])
    label_w, bar_w, right = 260, 520, 70
    width = label_w + bar_w + right
    top_pad, row_h = 84, 40
    height = top_pad + row_h * max(1, len(rows)) + 70

    def x_of(v):
        return label_w + bar_w * max(0.0, v) / top

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="10" y="24" font-size="16" font-weight="bold">simgate benchmarks: '
        'simgate / best peer (higher is better)</text>',
        '<text x="10" y="44" font-size="11" fill="#555">each ratio measured against its '
        'peer on the same machine in the same run</text>',
    ]
    axis_bottom = top_pad + row_h * max(1, len(rows))
    # Grid every 0.2.
    step = 0.2 if top <= 2.4 else 0.5 if top <= 6 else 1.0
    g = 0.0
    while g <= top + 1e-9:
        x = x_of(g)
        out.append(f'<line x1="{x:.1f}" y1="{top_pad - 6}" x2="{x:.1f}" y2="{axis_bottom}" '
                   'stroke="#eeeeee"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_bottom + 16}" font-size="11" '
                   f'text-anchor="middle" fill="#555">{g:.1f}</text>')
        g += step
    # Drawn last, over the reference lines.
    figures = []
    for i, (name, x, what, note, broken) in enumerate(rows):
        y = top_pad + i * row_h
        tip = escape(what or note)
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">'
                   f'<title>{tip}</title>{escape(name)}</text>')
        small = what if x is not None else (note or "no peer")
        if len(small) > 46:
            small = small[:45] + "…"
        out.append(f'<text x="{label_w - 8}" y="{y + 30}" text-anchor="end" font-size="10" '
                   f'fill="#777">{escape(small)}</text>')
        if x is None:
            text, fill = ("broken", "#c62828") if broken else ("n/a", "#777")
            out.append(f'<text x="{label_w + 6}" y="{y + 22}" fill="{fill}">{text}</text>')
            continue
        color = "#2e7d32" if x >= 1.0 else "#f9a825" if x >= 0.9 else "#c62828"
        bw = x_of(x) - label_w
        out.append(f'<rect x="{label_w}" y="{y + 6}" width="{bw:.1f}" height="22" '
                   f'fill="{color}"><title>{escape(name)}: {fmt_ratio(x)}</title></rect>')
        # A white halo keeps the figure legible across the reference lines.
        figures.append(f'<text x="{label_w + bw + 5:.1f}" y="{y + 22}" stroke="#ffffff" '
                   f'stroke-width="4" paint-order="stroke">{fmt_ratio(x)}</text>')
    for ref, dash, label in ((1.0, "", "1.0 = peer"), (0.9, ' stroke-dasharray="5,4"', "0.9")):
        x = x_of(ref)
        out.append(f'<line x1="{x:.1f}" y1="{top_pad - 6}" x2="{x:.1f}" y2="{axis_bottom}" '
                   f'stroke="#000000" stroke-width="1.2"{dash}/>')
        anchor = "start" if ref == 1.0 else "end"
        dx = 3 if ref == 1.0 else -3
        out.append(f'<text x="{x + dx:.1f}" y="{top_pad - 10}" font-size="11" '
                   f'text-anchor="{anchor}">{label}</text>')
    out += figures
    m = summary.get("machine") or {}
    load = m.get("loadavg")
    load = " ".join(str(v) for v in load) if isinstance(load, list) else "?"
    foot1 = (f"{m.get('nproc', '?')} cores ({m.get('cpu', '?')}), Linux {m.get('kernel', '?')}, "
             f"load average {load}")
    foot2 = f"{summary.get('time', '?')}, commit {summary.get('commit') or '?'}"
    out.append(f'<text x="10" y="{height - 30}" font-size="11" fill="#333">{escape(foot1)}</text>')
    out.append(f'<text x="10" y="{height - 14}" font-size="11" fill="#333">{escape(foot2)}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def cmd_svg(a):
    with open(a.summary) as f:
        summary = json.load(f)
    if isinstance(summary, dict) and "scenario" in summary:
        summary = {"machine": summary.get("machine"), "time": summary.get("time"),
                   "commit": summary.get("commit"), "results": [summary]}
    with open(a.svg, "w") as f:
        f.write(render_svg(summary))


def cmd_compare(a):
    try:
        old_doc, old = load_results(a.old)
        new_doc, new = load_results(a.new)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        print(f"chart.py compare: {e}", file=sys.stderr)
        return 2
    old_by = {r["scenario"]: r.get("ratio") for r in old}
    new_by = {r["scenario"]: r.get("ratio") for r in new}
    # After a run of some scenarios, the others of OLD are not news.
    wanted = [r["scenario"] for r in new]
    if not a.only_new:
        wanted += [r["scenario"] for r in old]
    wanted = list(dict.fromkeys(wanted))
    broken = list(new_doc.get("failed") or [])
    print(f"compare: old {a.old_label or a.old} ({old_doc.get('time', '?')}), new {a.new} ({new_doc.get('time', '?')});"
          f" REGRESSION when new < old x {1 - a.threshold:.2f}")
    w = max([len("scenario")] + [len(n) for n in wanted + broken])
    print(f"{'scenario':<{w}}  {'old':>7}  {'new':>7}  {'change':>8}  flag")
    regressions = 0
    for n in wanted:
        o, x = old_by.get(n), new_by.get(n)
        change, flag = "", ""
        if n not in new_by:
            flag = "not in new"
        elif n not in old_by:
            flag = "not in old"
        elif o is None or x is None:
            flag = "no ratio"
        else:
            change = f"{(x / o - 1) * 100:+.1f}%" if o > 0 else ""
            if x < o * (1 - a.threshold):
                flag = "REGRESSION"
                regressions += 1
        print(f"{n:<{w}}  {fmt_ratio(o) if n in old_by else '-':>7}  "
              f"{fmt_ratio(x) if n in new_by else '-':>7}  {change:>8}  {flag}")
    for n in broken:
        print(f"{n:<{w}}  {fmt_ratio(old_by.get(n)) if n in old_by else '-':>7}  {'-':>7}  {'':>8}  "
              "BROKEN (no new figure)")
    print(f"{regressions} regression(s)" + (f", {len(broken)} scenario(s) broken" if broken else ""))
    return 1 if regressions or broken else 0


def cmd_check(a):
    try:
        _, results = load_results(a.file)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        print(f"chart.py: {a.file}: {e}", file=sys.stderr)
        return 2
    if not all(isinstance(r, dict) and "scenario" in r for r in results):
        print(f"chart.py: {a.file}: a result without a scenario name", file=sys.stderr)
        return 2
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("result")
    r.add_argument("--out", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--ratio", required=True)
    r.add_argument("--rows", required=True)
    r.add_argument("--unit", default="")
    r.add_argument("--what", default="")
    r.add_argument("--note", default="")
    r.add_argument("--run", default="")
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--run", default="")
    s.add_argument("--failed", action="append")
    v = sub.add_parser("svg")
    v.add_argument("summary")
    v.add_argument("svg")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--only-new", action="store_true",
                   help="only the scenarios NEW has (a run of some of them)")
    c.add_argument("--threshold", type=float, default=0.05)
    c.add_argument("--old-label", default="", help="name OLD by this path")
    k = sub.add_parser("check")
    k.add_argument("file")
    a = p.parse_args()
    if a.cmd == "result":
        cmd_result(a)
    elif a.cmd == "summary":
        cmd_summary(a)
    elif a.cmd == "svg":
        cmd_svg(a)
    elif a.cmd == "check":
        sys.exit(cmd_check(a))
    else:
        sys.exit(cmd_compare(a))


if __name__ == "__main__":
    main()
