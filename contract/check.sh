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
# A version is the unit of release: each version's last committed contract is compared with the
# previous version's last one, under that version's CHANGELOG (commits inside one unreleased
# version may reshape what the version adds; what a client meets is version against version).
finals=()
last_version=""
for c in $(git log --first-parent --reverse --format=%h -- openapi/openapi.json); do
  v=$(git show "$c:openapi/openapi.json" | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).info.version))')
  if [ "$v" = "$last_version" ]; then
    finals[${#finals[@]}-1]=$c
  else
    finals+=("$c")
  fi
  last_version=$v
done
prev=""
for c in "${finals[@]}"; do
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
