#!/usr/bin/env bash
# --hdr-log read by an HdrHistogram nobody here wrote: Debian's libhdrhistogram-java.
# A short run against the built-in gateway writes the interval log and the JSON; for each
# tag, Java's HistogramLogProcessor (the reference tool) must print the JSON's total count and
# max, and Java's HistogramLogReader, adding the tag's intervals, the JSON's count and p99
# (within the histograms' 3 significant figures).
#
#   bash scripts/interop/hdr_log.sh [path/to/sockstorm]   (default ./target/release/sockstorm)
#
# Installs libhdrhistogram-java (and a JRE if there is no java) when missing, as root. About
# 10 s once installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-./target/release/sockstorm}")
PY=${PYTHON:-python3}   # the checks below need only the standard library
JAR=/usr/share/java/hdrhistogram.jar

die() { echo "hdr_log.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no sockstorm binary at $BIN (cargo build --release --bins)"

# 1. Packages, only when missing.
if [ ! -f "$JAR" ] || ! command -v java >/dev/null; then
  [ "$(id -u)" = 0 ] || die "needs root to install libhdrhistogram-java (or install it first)"
  pkgs=libhdrhistogram-java
  command -v java >/dev/null || pkgs="$pkgs default-jre-headless"
  echo "   installing $pkgs (Debian)"
  apt_log=$(mktemp)
  { apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } \
    >"$apt_log" 2>&1 || { cat "$apt_log"; die "apt-get failed"; }
  rm -f "$apt_log"
fi
[ -f "$JAR" ] || die "libhdrhistogram-java has no $JAR (dpkg -L libhdrhistogram-java)"

tmp=$(mktemp -d)
gw=
trap '[ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"' EXIT

# 2. The gateway on a free loopback port (it exits by itself if this script is killed), and
#    a 3 s run: echoes, pings, connections opened over a second.
"$BIN" serve --listen 127.0.0.1:0 --duration 60s -q >"$tmp/gateway.out" 2>&1 &
gw=$!
for _ in $(seq 100); do grep -q 'listening on' "$tmp/gateway.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's|.*listening on ws://\([^/]*\)/.*|\1|p' "$tmp/gateway.out")
[ -n "$addr" ] || die "the gateway did not start: $(cat "$tmp/gateway.out")"
"$BIN" run "ws://$addr/ws" -c 60 --connect-rate 60 -d 3s --message hello --message-rate 5 \
  --ping-interval 1s -q --json "$tmp/run.json" --hdr-log "$tmp/run.hlog" >"$tmp/summary.txt" \
  || { cat "$tmp/summary.txt"; die "the run failed"; }

# 3. Java's HistogramLogReader, adding each tag's intervals: total count and p99 (µs).
cat >"$tmp/LogTotals.java" <<'EOF'
import org.HdrHistogram.EncodableHistogram;
import org.HdrHistogram.Histogram;
import org.HdrHistogram.HistogramLogReader;
import java.io.File;

public class LogTotals {
    public static void main(String[] args) throws Exception {
        HistogramLogReader reader = new HistogramLogReader(new File(args[0]));
        Histogram sum = null;
        EncodableHistogram e;
        while ((e = reader.nextIntervalHistogram()) != null) {
            if (!args[1].equals(e.getTag())) continue;
            Histogram h = (Histogram) e;
            if (sum == null) sum = new Histogram(h.getLowestDiscernibleValue(),
                    h.getHighestTrackableValue(), h.getNumberOfSignificantValueDigits());
            sum.add(h);
        }
        if (sum == null) { System.out.println("0 0"); return; }
        System.out.println(sum.getTotalCount() + " " + sum.getValueAtPercentile(99.0));
    }
}
EOF

for tag in tcp_connect ws_upgrade ws_connecting ws_msg_rtt ws_ping; do
  # HistogramLogProcessor's last lines: "#[Max = 0.814, Total count = 50]" (ms: the values
  # are µs, so -outputValueUnitRatio 1000).
  java -cp "$JAR" org.HdrHistogram.HistogramLogProcessor -i "$tmp/run.hlog" -tag "$tag" \
    -outputValueUnitRatio 1000 >"$tmp/$tag.out" 2>&1 \
    || { cat "$tmp/$tag.out"; die "HistogramLogProcessor failed on $tag"; }
  processor=$(grep 'Total count' "$tmp/$tag.out") || { cat "$tmp/$tag.out"; die "no total for $tag"; }
  reader=$(java -cp "$JAR" "$tmp/LogTotals.java" "$tmp/run.hlog" "$tag")
  "$PY" - "$tmp/run.json" "$tag" "$processor" "$reader" <<'EOF'
import json, re, sys
doc, tag, processor, reader = sys.argv[1:]
h = json.load(open(doc))["histograms"][tag]
m = re.search(r"Max\s*=\s*([0-9.]+), Total count\s*=\s*(\d+)", processor)
assert m, processor
max_ms, total = float(m.group(1)), int(m.group(2))
count, p99 = (int(x) for x in reader.split())
assert h["count"] > 0, f"{tag}: the run measured nothing"
assert total == h["count"], f"{tag}: HistogramLogProcessor counts {total}, the JSON {h['count']}"
assert count == h["count"], f"{tag}: HistogramLogReader counts {count}, the JSON {h['count']}"
close = lambda a, b: abs(a - b) <= b * 0.001 + 1   # 3 significant figures, and ms printed to 1 µs
assert close(max_ms * 1000, h["max_us"]), f"{tag}: max {max_ms} ms vs the JSON's {h['max_us']} µs"
assert close(p99, h["p99_us"]), f"{tag}: p99 {p99} µs vs the JSON's {h['p99_us']} µs"
print(f"   {tag}: HistogramLogProcessor {' '.join(processor.split())} (ms); HistogramLogReader count {count}, "
      f"p99 {p99} us = JSON count {h['count']}, max {h['max_us']} us, p99 {h['p99_us']} us")
EOF
done
