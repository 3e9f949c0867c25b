# shellcheck shell=bash
# Set-up shared by scripts/try, scripts/test and .ci/run; sourced, not run.
#
# Everything here is idempotent: each step checks first and only does work that is missing, so
# running the scripts again on a prepared machine costs a second or two.
#
#   TRIMTAB_VENV   the virtual environment to use (default: .venv in the repository)
#   PYTHON         the interpreter that creates it (default: python3; 3.11 or newer)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TRIMTAB_VENV:-$ROOT/.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Servers and tools the integration tests need, as "command:Debian package".
SYSTEM_TOOLS=(promtool:prometheus prometheus:prometheus openssl:openssl nginx:nginx haproxy:haproxy)

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

can_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

_apt_updated=
apt_install() {
  can_apt || return 1
  if [ -z "$_apt_updated" ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    _apt_updated=1
  fi
  say "apt-get install --no-install-recommends $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

_python_ok() {
  "$1" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# A Python 3.11+ that can create virtual environments (Debian ships venv in python3-venv).
ensure_python() {
  PYTHON=${PYTHON:-python3}
  if [ -x "$VENV/bin/python" ] || _python_ok "$PYTHON"; then
    return 0
  fi
  if can_apt; then
    apt_install python3 python3-venv && _python_ok "$PYTHON" && return 0
  fi
  die "need Python 3.11 or newer with the venv module as '$PYTHON'" \
    "(Debian/Ubuntu: sudo apt-get install python3 python3-venv; or set PYTHON=/path/to/python3.11)"
}

_missing_packages() {
  local entry
  for entry in "${SYSTEM_TOOLS[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || printf '%s\n' "${entry#*:}"
  done
}

# The system tools of SYSTEM_TOOLS, installed with apt when missing and we are root.
# Returns non-zero, naming what is missing, when they cannot be installed.
ensure_system_tools() {
  local missing
  missing=$(_missing_packages | sort -u | tr '\n' ' ')
  [ -z "$missing" ] && return 0
  if can_apt; then
    # shellcheck disable=SC2086  # one word per package
    apt_install $missing && missing=$(_missing_packages | sort -u | tr '\n' ' ')
    [ -z "$missing" ] && return 0
  fi
  warn "missing Debian packages: ${missing% }" \
    "(install with: sudo apt-get install --no-install-recommends ${missing% })"
  return 1
}

# What the editable install depends on: pyproject.toml and the set of files in the packages.
# A strict editable install is a tree of links made at install time, so a new module needs a
# new install; an edit to an existing one does not.
_install_stamp() {
  local dirs
  dirs=$("$VENV/bin/python" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print(*tomllib.load(f)["tool"]["setuptools"]["package-dir"].values())')
  {
    "$VENV/bin/python" --version
    cat pyproject.toml
    # shellcheck disable=SC2086  # one word per package folder
    find $dirs -type f -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort || true
  } | sha256sum | cut -d' ' -f1
}

# .venv with trimtab installed in strict editable mode (mypy can follow it) and the test extras.
ensure_venv() {
  cd "$ROOT"
  ensure_python
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$VENV has $("$VENV/bin/python" --version); trimtab needs 3.11+: remove it and run again"
  local stamp_file=$VENV/.trimtab-install-stamp stamp
  stamp=$(_install_stamp)
  if [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] && [ -x "$VENV/bin/trimtab" ] &&
    compgen -G "$ROOT/build/__editable__.trimtab-*" >/dev/null; then
    return 0
  fi
  say "pip install -e '.[demo,test]' --config-settings editable_mode=strict"
  "$VENV/bin/python" -m pip install -q -e '.[demo,test]' --config-settings editable_mode=strict
  echo "$stamp" >"$stamp_file"
}
