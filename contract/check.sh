#!/usr/bin/env bash
# Breaking-change check over main's history: every consecutive pair of committed contracts
# (and the working tree against HEAD) must be additive, or announced as breaking in the
# CHANGELOG of the newer one. See contract/breaking.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() {  # before-file after-file changelog label
  if ! node contract/breaking.mjs "$1" "$2" "$3" > "$tmp/out" 2>&1; then
    echo "== $4"; cat "$tmp/out"; return 1
  fi
  echo "$4: $(head -1 "$tmp/out")"
}
status=0
prev=""
for c in $(git log --first-parent --reverse --format=%h -- openapi/openapi.json); do
  if [ -n "$prev" ]; then
    git show "$prev:openapi/openapi.json" > "$tmp/a.json"
    git show "$c:openapi/openapi.json" > "$tmp/b.json"
    git show "$c:openapi/CHANGELOG.md" > "$tmp/c.md" 2>/dev/null || : > "$tmp/c.md"
    check "$tmp/a.json" "$tmp/b.json" "$tmp/c.md" "$prev..$c" || status=1
  fi
  prev=$c
done
if [ -n "$prev" ] && ! git diff --quiet HEAD -- openapi/openapi.json; then
  git show "HEAD:openapi/openapi.json" > "$tmp/a.json"
  check "$tmp/a.json" openapi/openapi.json openapi/CHANGELOG.md "HEAD..working tree" || status=1
fi
exit $status
