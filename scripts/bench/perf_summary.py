#!/usr/bin/env python3
"""Self time of a `perf record` profile of simgate, by category.

    perf report -i perf.data --no-children --sort sym --stdio -g none \
        --percent-limit 0 | scripts/bench/perf_summary.py [--top N]

Prints one line `perf: kernel=…% alloc+copy=…% …` (the categories add up
to 100) and, with --top, the N hottest symbols outside the kernel. The
categories are those of benches/README.md ("funnel-udp"); a symbol falls
in the first whose pattern it matches.
"""
import re
import sys

CATEGORIES = [
    ("kernel", None),  # perf marks kernel symbols with [k]
    ("alloc+copy", r"malloc|free|realloc|calloc|memcpy|memmove|memset|_int_|tcache|raw_vec|RawVec|alloc::alloc"),
    ("json", r"serde_json|is_json|Validated|str::validations|from_utf8"),
    ("hashing", r"foldhash|Hasher|hash::|sip"),
    ("tokio", r"tokio::"),
    ("sync", r"Semaphore|semaphore|dashmap|arc_swap|parking_lot|std::sync|Mutex|RwLock|futex"),
    ("other", r""),
]


def main():
    top = 0
    if len(sys.argv) == 3 and sys.argv[1] == "--top":
        top = int(sys.argv[2])
    totals = {name: 0.0 for name, _ in CATEGORIES}
    user = []
    line_re = re.compile(r"^\s*([0-9.]+)%\s+\[([k.])\]\s+(.*)$")
    for line in sys.stdin:
        m = line_re.match(line)
        if not m:
            continue
        pct, where, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        if where == "k":
            totals["kernel"] += pct
            continue
        user.append((pct, sym))
        for name, pattern in CATEGORIES[1:]:
            if re.search(pattern, sym):
                totals[name] += pct
                break
    whole = sum(totals.values()) or 1.0
    print("perf: " + " ".join(f"{n}={100 * v / whole:.1f}%" for n, v in totals.items()))
    for pct, sym in sorted(user, reverse=True)[:top]:
        print(f"  {100 * pct / whole:5.1f}%  {sym[:110]}")


if __name__ == "__main__":
    main()
