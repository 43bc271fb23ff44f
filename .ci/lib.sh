# Shared by .ci/test, .ci/example and .ci/run (sourced, not run). Everything
# goes into the project: .venv (git-ignored) and node_modules; nothing global
# but the apt packages a command is missing.

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the apt packages whose commands are missing: "command:package" pairs.
# apt-get update runs only when something is missing.
ensure_apt() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "== apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Fail unless every named command exists (apt may have "succeeded" without it).
require_commands() {
    local name
    for name in "$@"; do
        command -v "$name" >/dev/null || { echo "missing command: $name" >&2; return 1; }
    done
}

# Create or reuse a virtualenv and install the project with the given extras
# into it. A stamp (hash of setup.py + extras) skips pip when nothing changed.
# usage: ensure_venv DIR PYTHON EXTRAS [pip args...]
ensure_venv() {
    local dir=$1 python=$2 extras=$3
    shift 3
    local stamp
    stamp=$({ cat setup.py; printf '%s\n' "$@"
              for arg in "$@"; do if [[ -f $arg ]]; then cat "$arg"; fi; done; } \
            | sha256sum | cut -c1-16)-$extras
    if [[ ! -x $dir/bin/python ]]; then
        echo "== creating $dir ($("$python" --version 2>&1))"
        "$python" -m venv "$dir"
    fi
    if [[ $(cat "$dir/.installed" 2>/dev/null) != *"[$stamp]"* ]]; then
        echo "== installing .[$extras] into $dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
        "$dir/bin/python" -m pip install -q -e ".[$extras]" "$@"
        echo "[$stamp]" >>"$dir/.installed"
    fi
}

# The browser's Socket.IO client, served by example_app.py; never committed.
# Returns non-zero if it could not be installed (offline).
ensure_socketio_client() {
    [[ -f node_modules/socket.io-client/dist/socket.io.min.js ]] && return 0
    echo "== npm install socket.io-client@4"
    npm install --no-save --no-package-lock --no-audit --no-fund socket.io-client@4 >/dev/null
}

# A private temporary folder for this run, removed on exit.
private_tmpdir() {
    TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/flask_session_bridge.XXXXXX")
    export TMPDIR
    # shellcheck disable=SC2064
    trap "rm -rf '$TMPDIR'" EXIT
}
