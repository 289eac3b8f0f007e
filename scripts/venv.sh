# Sourced by ./kayit and ./run-tests: create or refresh the project's virtualenv.
# ensure_venv ROOT EXTRAS   (EXTRAS: "" or "dev")
ensure_venv() {
    local root=$1 extras=$2 python=${KAYIT_PYTHON:-}
    local venv=$root/.venv stamp=$root/.venv/.installed${extras:+-$extras}
    if [ -z "$python" ]; then
        for candidate in python3.11 python3.12 python3.13 python3; do
            if command -v "$candidate" >/dev/null && "$candidate" -c \
                'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                python=$candidate
                break
            fi
        done
    fi
    if [ -z "$python" ]; then
        echo "kayit needs Python 3.11 or newer (set KAYIT_PYTHON to its path)" >&2
        exit 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv ..." >&2
        "$python" -m venv "$venv"
    fi
    if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
        echo "installing kayit${extras:+ with $extras tools} into $venv ..." >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$root${extras:+[$extras]}"
        touch "$stamp"
    fi
}
