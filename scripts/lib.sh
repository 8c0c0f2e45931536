# shellcheck shell=bash
# Shared by the scripts in this directory: sourced, never run on its own.
#
# Every script prints its steps as `==> step` lines on stderr (stdout stays free for output a
# caller may capture, such as `scripts/pg env`), and stops with one `error:` sentence that says
# what to do when something is missing or wrong.

HS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

# What a fresh Debian 12 machine needs to build, test, benchmark and run handsel. The -dev
# packages are the libraries the server links; lua5.4 is the stand-alone interpreter for trying
# out process scripts; postgresql-15 provides the server binaries for the private cluster that
# scripts/pg runs (its own system cluster, if the package creates one, is never used);
# nghttp2-client brings nghttp and h2load, nghttp2-server brings nghttpd (the benchmark's
# reference server); clang-format checks the committed style; clang and libclang-rt-14-dev
# (libFuzzer) build the fuzz harnesses that scripts/fuzz runs.
HS_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates curl
  libuv1-dev libnghttp2-dev liblua5.4-dev lua5.4 libmsgpack-dev libpq-dev libssl-dev
  libcmocka-dev libjansson-dev libmimalloc-dev
  postgresql-15 postgresql-client-15
  nghttp2-client nghttp2-server openssl procps clang-format clang libclang-rt-14-dev
)

hs_log() { printf '==> %s\n' "$*" >&2; }
hs_note() { printf '    %s\n' "$*" >&2; }
hs_warn() { printf 'warning: %s\n' "$*" >&2; }
hs_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

hs_nproc() { nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2; }

# Runs a command as root: directly when we are root, through sudo when it is installed.
# Without a terminal (CI) sudo must not wait for a password nobody can type, so it gets -n and
# fails at once with its own message instead.
hs_as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [[ -t 0 ]]; then
      sudo "$@"
    else
      sudo -n "$@"
    fi
  else
    hs_die "this step needs root to run '$*': run the script as root, or install sudo and" \
      "give $(id -un) the right to use it"
  fi
}

HS_APT_UPDATED=0

# hs_need_packages PKG...: installs the packages that dpkg does not list as installed, and
# nothing else, so a second run touches no package. `apt-get update` runs at most once per
# script, and only when something is missing.
hs_need_packages() {
  (($# > 0)) || return 0
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    hs_die "dpkg-query and apt-get were not found: these scripts set up Debian 12; on another" \
      "system install the equivalents of: $*"
  fi
  local installed missing=() pkg
  # One dpkg-query call for the whole list keeps the no-op case fast. Unknown packages are
  # reported on stderr and simply left out of the output, which makes them "missing".
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
    awk '$2 == "install" && $3 == "ok" && $4 == "installed" { print $1 }') || true
  for pkg in "$@"; do
    grep -qxF -- "$pkg" <<<"$installed" || missing+=("$pkg")
  done
  ((${#missing[@]} > 0)) || return 0

  hs_log "installing missing packages: ${missing[*]}"
  if [[ $EUID -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    hs_die "installing ${missing[*]} needs root, and sudo is not installed: run this script as" \
      "root once, or install them as root (apt-get install ${missing[*]})"
  fi
  if [[ -r /etc/os-release ]]; then
    local id version
    id=$(sed -n 's/^ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
    version=$(sed -n 's/^VERSION_ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
    if [[ $id != debian || $version != 12 ]]; then
      hs_warn "this is ${id:-unknown} ${version:-?}, not Debian 12: package names may differ"
    fi
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
  if ((HS_APT_UPDATED == 0)); then
    hs_as_root "${apt[@]}" update -q ||
      hs_die "apt-get update failed: check the network and /etc/apt/sources.list, then run" \
        "this script again"
    HS_APT_UPDATED=1
  fi
  hs_as_root "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" ||
    hs_die "apt-get could not install: ${missing[*]} (see apt's message above); on Debian 12" \
      "these are all in the main archive"
  for pkg in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
      hs_die "package $pkg is still not installed after apt-get install"
  done
}

hs_need_deps() { hs_need_packages "${HS_PACKAGES[@]}"; }

# hs_build_dir TYPE: prints the build directory of one build type, after making sure it can be
# used: a cache written for another source tree (the checkout was moved or copied) is removed,
# since CMake refuses to reuse it, and a tree left by another user is reported, not fought.
hs_build_dir() {
  local dir="$HS_ROOT/build/$1" cache home
  cache="$dir/CMakeCache.txt"
  if [[ -f $cache ]]; then
    home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")
    if [[ -n $home && $home != "$HS_ROOT" ]]; then
      hs_note "build/$1 was configured for $home; starting it afresh"
      rm -rf "$dir"
    fi
  fi
  if [[ -e $dir && ! -w $dir ]]; then
    hs_die "$dir belongs to $(stat -c %U "$dir"), not to $(id -un): remove it (sudo rm -rf" \
      "$HS_ROOT/build) or run as that user"
  fi
  printf '%s\n' "$dir"
}

# Is something already accepting TCP connections on HOST:PORT? Uses bash's /dev/tcp so that
# no extra tool is needed.
hs_port_busy() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Quotes a value for a libpq conninfo string: bare when it is plain, otherwise in single quotes
# with backslashes and quotes escaped, as libpq's parser expects.
hs_conninfo_quote() {
  local v=$1
  if [[ $v =~ ^[A-Za-z0-9_./:@-]+$ ]]; then
    printf '%s' "$v"
  else
    v=${v//\\/\\\\}
    v=${v//\'/\\\'}
    printf "'%s'" "$v"
  fi
}

# Quotes a value for the shell in single quotes (so `eval` of our output is safe).
hs_shell_quote() {
  local v=$1
  printf "'%s'" "${v//\'/\'\\\'\'}"
}
