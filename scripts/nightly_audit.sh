#!/usr/bin/env bash
# Nightly audit, for cron: writes a dated report and exits non-zero on any violation.
#   0 3 * * *  cd /srv/ledger && scripts/nightly_audit.sh /var/log/ledger-audit
# Reads LEDGER_* settings from the environment like the service does.
# Anchors: every night that the audit passes, the head of the log's running digest is
# appended to $LEDGER_ANCHORS (default: REPORTS/anchors.jsonl; keep it, or a copy, on a
# machine the store's operators cannot write to). Each audit proves the log still
# extends every anchor taken before: a cut tail, an edited or a removed event fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
reports="${1:-var/audit-reports}"
mkdir -p "$reports"
anchors="${LEDGER_ANCHORS:-$reports/anchors.jsonl}"
stamp="$(date -u +%Y-%m-%dT%H%M%SZ)"
ledger="${LEDGER_BIN:-.venv/bin/ledger}"
anchor_options=()
if [ -s "$anchors" ]; then
  anchor_options=(--anchors "$anchors")
fi
status=0
"$ledger" audit "${anchor_options[@]}" --format json --out "$reports/audit-$stamp.json" >/dev/null || status=$?
"$ledger" audit "${anchor_options[@]}" --no-projections --format text --out "$reports/audit-$stamp.txt" >/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "ledger audit found violations: see $reports/audit-$stamp.txt" >&2
  exit "$status"
fi
"$ledger" anchor --append "$anchors" >/dev/null
exit 0
