# Sourced by scripts/demo and scripts/test: make .venv with the package and its test
# dependencies, reinstalling only when pyproject.toml is newer than the last install.
ensure_venv() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "needs python3 >= 3.10" >&2; return 1; }
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv; then
      # Debian ships venv's ensurepip separately.
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
      else
        echo "'python3 -m venv' failed; install python3-venv" >&2; return 1
      fi
    fi
  fi
  local stamp=.venv/.fic-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing fic-middleware and its test dependencies into .venv..."
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
  fi
}
