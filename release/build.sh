#!/usr/bin/env bash
# Builds strata's release for Linux x86_64 (docs/ci.md, "Getting the
# binary onto a runner"): strata-VERSION-x86_64-unknown-linux-gnu.tar.gz
# and SHA256SUMS in the output directory (default target/release-dist).
#
#   release/build.sh [--out DIR] [--pin]
#
# --pin also writes the tarball's version and SHA-256 into every wrapper's
# installer and into release/SHA256SUMS (a cut release: commit them;
# tests/wrappers.rs checks that the wrappers and that file agree).
#
# Why this way: the binary links glibc dynamically (the TLS provider,
# aws-lc, is C), so it runs on a distribution whose glibc is at least the
# one it was linked against. Linked by zig cc against glibc 2.17's
# symbols (cargo-zigbuild's `TARGET.2.17`), it runs on every x86_64
# distribution since 2014 (RHEL/CentOS 7, Debian 8, Ubuntu 14.04, Amazon
# Linux 2, and every CI's hosted runners), whatever glibc the build machine
# has. Not on musl (Alpine) and not on aarch64: those need their own Rust
# standard library, which cannot be installed on this project's machines;
# there, build from source (`cargo install --locked --path cli`).
# zig and cargo-zigbuild come from PyPI, pinned, into a virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

ziglang_version=0.15.2
cargo_zigbuild_version=0.24.1
target=x86_64-unknown-linux-gnu
glibc=2.17

out=target/release-dist
pin=false
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --pin) pin=true; shift ;;
    *) echo "usage: release/build.sh [--out DIR] [--pin]" >&2; exit 2 ;;
  esac
done

# The tools, once per machine (their versions name the virtualenv).
tools="${STRATA_RELEASE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-release}/zig-$ziglang_version-zigbuild-$cargo_zigbuild_version"
if [ ! -x "$tools/bin/cargo-zigbuild" ] || [ ! -x "$tools/bin/python-zig" ]; then
  echo "== installing ziglang $ziglang_version and cargo-zigbuild $cargo_zigbuild_version into $tools"
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check \
    "ziglang==$ziglang_version" "cargo-zigbuild==$cargo_zigbuild_version"
fi
export PATH="$tools/bin:$PATH"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit="$commit-dirty"
fi
name="strata-$version-$target"

echo "== building $name (commit $commit, glibc $glibc baseline)"
# No debug info in the shipped binary (the workspace's release profile
# keeps line tables for the benchmarks' backtraces); its own target
# directory, so the host's release build is not rebuilt for zig's.
STRATA_COMMIT="$commit" \
  CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo zigbuild --locked --release -p strata-cli \
  --target "$target.$glibc" --target-dir target/zig
bin="target/zig/$target/release/strata"

# The baseline, checked: no symbol the binary imports is versioned newer
# than glibc 2.17.
newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -1)" != "$glibc" ]; then
  echo "$bin needs glibc $newest, newer than the $glibc baseline:" >&2
  objdump -T "$bin" | grep "GLIBC_$newest" >&2
  exit 1
fi
echo "newest glibc symbol version: $newest (baseline $glibc)"

# One file at the tarball's top, owned by root, dated by the commit: one
# binary packs to the same bytes.
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/strata"
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$stage" -cf - strata | gzip -9n > "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" > SHA256SUMS)
sha=$(cut -d' ' -f1 "$out/SHA256SUMS")

# What the runner gets runs here.
mkdir "$stage/check"
tar -xzf "$out/$name.tar.gz" -C "$stage/check"
"$stage/check/strata" --version
echo "$out/$name.tar.gz $(du -h "$out/$name.tar.gz" | cut -f1) sha256 $sha"

# A cut release: its pins into every wrapper's installer (the shell one
# is carried by the Buildkite plugin, the orb and the component alike).
if [ "$pin" = true ]; then
  cp "$out/SHA256SUMS" release/SHA256SUMS
  sed -i -E "s/^( *)strata_version=[0-9][^ ]*\$/\1strata_version=$version/; s/^( *)strata_sha256=[0-9a-f]{64}\$/\1strata_sha256=$sha/" \
    wrappers/buildkite/lib/install.sh wrappers/circleci/orb.yml wrappers/gitlab/templates/strata.yml
  sed -i -E "s/^const VERSION = \".*\";/const VERSION = \"$version\";/; s/^const SHA256 = \"[0-9a-f]{64}\";/const SHA256 = \"$sha\";/" \
    wrappers/github/install.js
  echo "pinned $version ($sha) in release/SHA256SUMS and the wrappers"
fi
