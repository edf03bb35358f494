#!/usr/bin/env bash
# `make lint`'s repeated-code gate over imgfeat/ and jobs/ (tests/, bench/ and
# notebooks/ may repeat themselves). Fails on any pair the scan lists with both
# sides in imgfeat/ or jobs/: identical runs and runs alike only in shape (other
# names and values) alike, on a scan that did not finish, and on a list cut short.
# Where logic repeats, make one piece serve both (a helper, a table driving a loop).
# `duplicates` is a machine tool, not a pip package: without it lint fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v duplicates >/dev/null; then
  echo "lint: the 'duplicates' command is not on PATH; install it (a machine tool, not on PyPI) to run make lint" >&2
  exit 1
fi

# Pairs reviewed and kept on purpose: "a/file.py ~ b/file.py", each with a comment
# saying why the two are not one piece of logic. Use sparingly; today there are none.
allowed=(
)

out="$(duplicates --most 200 --seconds 120)"
ours='(imgfeat|jobs)/[^ ]+'
pairs="$(printf '%s\n' "$out" | grep -E "^D[0-9]+ $ours ~ $ours" || true)"
for pair in "${allowed[@]+"${allowed[@]}"}"; do
  a="${pair%% ~ *}" b="${pair##* ~ }"
  pairs="$(printf '%s\n' "$pairs" | grep -vE "^D[0-9]+ $a:[0-9-]+ ~ $b:[0-9-]+( |$)" || true)"
done
broken="$(printf '%s\n' "$out" | grep -E '^incomplete:|^\(\+[0-9]+ more pairs\)' || true)"
if [ -n "$pairs$broken" ]; then
  echo "duplicates: repeated code in imgfeat/ or jobs/ (make one piece serve both; 'shape' = alike but for names and values):" >&2
  printf '%s\n' "$pairs" "$broken" | grep -v '^$' | sed 's/^/  /' >&2
  exit 1
fi
echo "duplicates: no repeated code in imgfeat/ or jobs/"
