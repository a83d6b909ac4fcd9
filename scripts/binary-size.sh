#!/usr/bin/env bash
# What makes up the release binary: its size on disk and stripped (what the image ships),
# the loaded sections, and the code and data per crate, from the symbol table (`nm`), the
# way `cargo bloat --crates` counts them, without building the binary a second time.
#
# Usage: scripts/binary-size.sh [BINARY]   (default: target/release/floodgate)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-${CARGO_TARGET_DIR:-$root/target}/release/floodgate}
[ -x "$binary" ] || { echo "no binary at $binary (cargo build --release --bin floodgate)" >&2; exit 1; }
command -v nm >/dev/null && command -v size >/dev/null || { echo "needs binutils (nm, size)" >&2; exit 1; }

stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip --strip-debug --output-file "$stripped" "$binary"
printf 'binary %s: %.1f MB on disk, %.1f MB without debug info (what the image ships)\n\n' \
    "$binary" "$(stat -c %s "$binary" | awk '{print $1 / 1e6}')" "$(stat -c %s "$stripped" | awk '{print $1 / 1e6}')"

echo "| loaded section | size |"
echo "|---|---|"
size -A "$stripped" | awk '$1 ~ /^\.(text|rodata|data|data\.rel\.ro|bss|eh_frame|gcc_except_table)$/ {
    printf "| %s | %.1f MB |\n", $1, $2 / 1e6 }'
echo

nm -S --size-sort -C "$binary" 2>/dev/null | python3 -c '
import collections, re, sys
by_crate = collections.Counter()
total = 0
for line in sys.stdin:
    parts = line.split(" ", 3)
    if len(parts) < 4 or parts[2] not in "tTrRdD":
        continue
    size = int(parts[1], 16)
    name = parts[3].strip()
    total += size
    name = re.sub(r"^<+", "", name)
    name = re.sub(r"^(impl|dyn) ", "", name)
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    # Symbols without a Rust path are C code (SQLite, ring, jemalloc) and libc glue.
    by_crate[match.group(1) if match else "C and other"] += size
print(f"| crate (named code and data, {total / 1e6:.1f} MB in all) | size | share |")
print("|---|---|---|")
for crate, size in by_crate.most_common(20):
    print(f"| {crate} | {size / 1e3:.0f} kB | {100 * size / total:.1f}% |")
'
