#!/usr/bin/env bash
# The core's module graph has no cycle (docs/architecture.md, "Code map"): no module of
# lab-core uses, directly or through others, a module that uses it. Prints each cycle with one
# use that makes each of its edges, and exits 1 when there is one. `scripts/check-modules.sh
# PACKAGE` checks another package of the workspace.
#
# Two sources of uses, because neither sees them all:
# - cargo-modules (installed when missing: a long compile, once) gives the graph of every
#   item of the crate and what each one uses through `use` declarations and signatures,
#   grouped imports (`use crate::{a::X, b::Y}`) included. It does not see a path named in a
#   function's body (`crate::registry::TLS_PORT` in plan.rs). Its own `--acyclic` is no help:
#   it checks that item graph, where a type and its own methods already make a cycle
#   (`ClusterName` <-> `ClusterName::as_str`), and it ignores the --no-* filters, so it fails on
#   any crate.
# - So the sources are also searched for `crate::a::b` paths outside comments, up to the
#   first `#[cfg(test)]` of each file (a test may use what the code may not).
# Each use is folded into the module that holds each end, and the graph of modules is checked.
# Uses between a module and its own descendants (a folder's mod.rs and its files, `super::`)
# do not count: a folder is one area.
#
# Not yet run by scripts/test.sh: the core has cycles until the move of issue 21 lands, and
# then this script joins the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="check-modules"
. scripts/common.sh
package=${1:-lab-core}

need_cargo
# cargo-modules 0.28 needs rustc 1.98; 0.27 builds with the toolchain CI has (1.95).
cargo_tool cargo-modules cargo-modules@0.27.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo modules dependencies --lib -p "$package" --no-externs --no-sysroot >"$work/graph"
# The package's directory, from its ID (`path+file:///DIR#NAME@VERSION`, or `#VERSION`).
src=$(cargo metadata --format-version 1 --no-deps |
  grep -o "\"name\":\"$package\",\"version\":\"[^\"]*\",\"id\":\"path+file://[^\"#]*" |
  sed 's|.*path+file://||' | head -n 1)
crate=${package//-/_}
[ -d "$src/src" ] || die "cannot find the sources of $package (got '$src')"
# "MODULE FILE:LINE PATH" for each `crate::...` path named in code: the file's module is its
# path (lib.rs the crate, a/mod.rs and a.rs the module a, a/b.rs a::b).
find "$src/src" -name '*.rs' | sort | while read -r f; do
  m=${f#"$src/src/"}; m=${m%.rs}; m=${m%/mod}; m=${m%lib}; m=${m%/}
  awk -v m="$crate${m:+::${m//\//::}}" -v f="${f#"$PWD/"}" -v c="$crate" '
    /^[[:space:]]*#\[cfg\(test\)\]/ { exit }
    /^[[:space:]]*\/\// { next }
    { s = $0; sub(/[[:space:]]\/\/.*/, "", s)
      while (match(s, /crate::[a-z_][a-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*/)) {
        print m, f ":" FNR, c substr(s, RSTART + 5, RLENGTH - 5); s = substr(s, RSTART + RLENGTH) } }' "$f"
done >"$work/refs"

# Lines of cargo-modules' DOT output that matter:
#   "a::b" [label="pub mod|b", ...]; // "mod" node
#   "a::b::f" -> "a::c::T" [label="uses", ...]; // "uses" edge
# Each use becomes an edge between the modules holding its two ends, unless one of them holds
# the other; the strongly connected components of that graph (Tarjan's algorithm) are its
# cycles, printed with one use for each edge inside them.
awk -v name="$NAME" -v package="$package" '
  FILENAME ~ /graph$/ && / \/\/ "(mod|crate)" node$/ { split($0, q, "\""); module[q[2]] = 1; next }
  FILENAME ~ /graph$/ && / \/\/ "uses" edge$/ { split($0, q, "\""); from[++n] = q[2]; to[n] = q[4]; why[n] = q[2] " uses " q[4]; next }
  FILENAME ~ /refs$/ { from[++n] = $1; to[n] = $3; why[n] = $2 " names " $3 }
  function holder(p) { while (!(p in module) && index(p, "::")) sub(/::[^:]*$/, "", p); return p }
  function within(a, b) { return a == b || index(a, b "::") == 1 }
  function visit(v,   i, w, k, x, y) {
    ix[v] = low[v] = ++count; stack[++sp] = v; on[v] = 1
    for (i = 1; i <= deg[v]; i++) {
      w = adj[v, i]
      if (!(w in ix)) { visit(w); if (low[w] < low[v]) low[v] = low[w] }
      else if (on[w] && ix[w] < low[v]) low[v] = ix[w]
    }
    if (low[v] != ix[v]) return
    k = 0
    do { w = stack[sp--]; on[w] = 0; member[++k] = w } while (w != v)
    if (k == 1) return
    cycles++
    printf "%s: %s modules use each other in a cycle:\n", name, package > "/dev/stderr"
    for (x = 1; x <= k; x++)
      for (y = 1; y <= k; y++)
        if ((member[x], member[y]) in example)
          printf "  %s -> %s   (%s)\n", member[x], member[y], example[member[x], member[y]] > "/dev/stderr"
  }
  END {
    for (e = 1; e <= n; e++) {
      a = holder(from[e]); b = holder(to[e])
      if (within(a, b) || within(b, a)) continue
      if (!((a, b) in example)) { example[a, b] = why[e]; adj[a, ++deg[a]] = b; edges++ }
      node[a] = node[b] = 1
    }
    for (v in node) if (!(v in ix)) visit(v)
    if (cycles) exit 1
    printf "%s: %s has no cycle between its modules (%d uses between modules)\n", name, package, edges
  }' "$work/graph" "$work/refs"
