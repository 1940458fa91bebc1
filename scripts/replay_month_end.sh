#!/usr/bin/env bash
# Month-end balances for finance, for cron: every balance as it stood at 00:00 UTC on
# the first of this month, as CSV, plus a beancount journal to that instant.
#   5 0 1 * *  cd /srv/ledger && scripts/replay_month_end.sh /srv/finance
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-var/month-end}"
mkdir -p "$out"
instant="$(date -u +%Y-%m-01T00:00:00Z)"
ledger="${LEDGER_BIN:-.venv/bin/ledger}"
"$ledger" replay --as-of "$instant" --format csv --out "$out/balances-${instant%%T*}.csv"
"$ledger" export --format beancount --as-of "$instant" --out "$out/journal-${instant%%T*}.beancount"
