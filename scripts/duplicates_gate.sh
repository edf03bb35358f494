#!/usr/bin/env bash
# `make lint`'s repeated-code gate over imgfeat/ and jobs/ (tests/, bench/ and
# notebooks/ may repeat themselves). Fails on a pair of identical runs with both
# sides in imgfeat/ or jobs/, and on a scan that did not finish; pairs alike only
# in shape (other names and values) are listed as places to look, not failures.
# `duplicates` is a machine tool, not a pip package: without it lint fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v duplicates >/dev/null; then
  echo "lint: the 'duplicates' command is not on PATH; install it (a machine tool, not on PyPI) to run make lint" >&2
  exit 1
fi
out="$(duplicates --most 200 --seconds 120)"
ours='(imgfeat|jobs)/[^ ]+'
pairs="$(printf '%s\n' "$out" | grep -E "^D[0-9]+ $ours ~ $ours" || true)"
copies="$(printf '%s\n' "$pairs" | grep -vE ' shape( |$)' | grep -v '^$' || true)"
shapes="$(printf '%s\n' "$pairs" | grep -E ' shape( |$)' || true)"
broken="$(printf '%s\n' "$out" | grep -E '^incomplete:' || true)"
if [ -n "$shapes" ]; then
  echo "duplicates: alike in shape (look, not failing):"
  printf '%s\n' "$shapes" | sed 's/^/  /'
fi
if [ -n "$copies$broken" ]; then
  echo "duplicates: repeated code in imgfeat/ or jobs/ (make one piece serve both):" >&2
  printf '%s\n' "$copies" "$broken" | grep -v '^$' | sed 's/^/  /' >&2
  exit 1
fi
echo "duplicates: no repeated code in imgfeat/ or jobs/"
