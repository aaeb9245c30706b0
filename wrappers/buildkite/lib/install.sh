# Installs the pinned strata release once per runner, checked against its
# pinned SHA-256 before anything in it runs, and points STRATA_BIN at it
# (docs/ci.md, "Getting the binary onto a runner"). Nothing to do when
# STRATA_BIN is set or STRATA_INSTALL is false (strata from the PATH).
# STRATA_VERSION with STRATA_SHA256 pins another release; STRATA_RELEASE_URL
# is where releases are served; STRATA_INSTALL_DIR where they are kept.
# release/build.sh --pin writes the two pins; the CircleCI orb and the
# GitLab component carry this text as it is (tests/wrappers.rs checks).
strata_version=0.1.0
strata_sha256=47003ce249f57edcc0069d6f5b3aee760bdfc3be96ed45a9b2a0d9aa04ec19f8
if [ -z "${STRATA_BIN:-}" ] && [ "${STRATA_INSTALL:-true}" != false ]; then
  if [ -n "${STRATA_VERSION:-}" ]; then
    strata_version="$STRATA_VERSION"
    strata_sha256="${STRATA_SHA256:?STRATA_VERSION needs STRATA_SHA256, the SHA-256 of its tarball}"
  fi
  strata_tarball="strata-$strata_version-x86_64-unknown-linux-gnu.tar.gz"
  strata_home="${STRATA_INSTALL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-bin}/$strata_sha256"
  if [ ! -x "$strata_home/strata" ]; then
    if [ "$(uname -sm)" != "Linux x86_64" ]; then
      echo "strata: no release for $(uname -sm): build strata (cargo install --locked --path cli) and set STRATA_BIN" >&2
      exit 1
    fi
    strata_url="${STRATA_RELEASE_URL:-https://github.com/ORG/strata/releases/download/v$strata_version}/$strata_tarball"
    strata_tmp="$(mktemp -d)"
    if command -v curl >/dev/null; then
      curl -fsSL --retry 3 -o "$strata_tmp/$strata_tarball" "$strata_url"
    else
      wget -q -O "$strata_tmp/$strata_tarball" "$strata_url"
    fi || { echo "strata: cannot download $strata_url" >&2; rm -rf "$strata_tmp"; exit 1; }
    strata_got="$(sha256sum "$strata_tmp/$strata_tarball" | cut -d' ' -f1)"
    if [ "$strata_got" != "$strata_sha256" ]; then
      echo "strata: $strata_url has SHA-256 $strata_got, not the pinned $strata_sha256: refused, nothing in it run" >&2
      rm -rf "$strata_tmp"
      exit 1
    fi
    mkdir "$strata_tmp/bin"
    tar -xzf "$strata_tmp/$strata_tarball" -C "$strata_tmp/bin" strata
    mkdir -p "$(dirname "$strata_home")"
    # Into place whole; another job on this runner may have put it there first.
    mv "$strata_tmp/bin" "$strata_home.$$"
    mv -T "$strata_home.$$" "$strata_home" 2>/dev/null || rm -rf "$strata_home.$$"
    rm -rf "$strata_tmp"
  fi
  STRATA_BIN="$strata_home/strata"
  export STRATA_BIN
fi
