#!/usr/bin/env bash
# Nightly audit, for cron: writes a dated report and exits non-zero on any violation.
#   0 3 * * *  cd /srv/ledger && scripts/nightly_audit.sh /var/log/ledger-audit
# Reads LEDGER_* settings from the environment like the service does.
set -euo pipefail
cd "$(dirname "$0")/.."
reports="${1:-var/audit-reports}"
mkdir -p "$reports"
stamp="$(date -u +%Y-%m-%dT%H%M%SZ)"
ledger="${LEDGER_BIN:-.venv/bin/ledger}"
status=0
"$ledger" audit --format json --out "$reports/audit-$stamp.json" >/dev/null || status=$?
"$ledger" audit --no-projections --format text --out "$reports/audit-$stamp.txt" >/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "ledger audit found violations: see $reports/audit-$stamp.txt" >&2
fi
exit "$status"
