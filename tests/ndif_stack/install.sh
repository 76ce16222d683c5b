#!/usr/bin/env bash
# Install the real NDIF server stack (ndif 0.1.2) for tests/ndif_stack: its own venv at .ndif-venv/ (never the
# project's), plus the system services it needs (Redis, PostgreSQL). Idempotent: a stamp file holds the hash of
# this recipe, and a second run with the same recipe does nothing.
#
# Why this recipe (issue 17): ndif 0.1.2 declares Python >= 3.12 but runs on 3.11; `pip install "ndif[api,ray]"`
# on 3.11 fails building numpy from source, so ndif's dependencies are named explicitly and ndif itself goes in
# with --no-deps --ignore-requires-python.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=$ROOT/.ndif-venv
PY=${NDIF_PYTHON:-python3}

# The versions the stack was validated with are pinned where a release could change the server's behaviour:
# nnsight and transformers as on the client side, Ray (the controller and actors), moto (the S3 stand-in).
TORCH='torch==2.13.0'
DEPS=('nnsight==0.8.1' 'transformers==5.24.0' 'ray[default]==2.60.0' 'moto[server]==5.2.5'
      'pydantic' 'redis' 'click' 'python-dotenv' 'pyyaml' 'boto3' 'fastapi' 'uvicorn[standard]' 'gunicorn'
      'python-multipart' 'accelerate' 'numpy' 'zstandard' 'peft' 'asyncpg' 'httpx')
NDIF='ndif==0.1.2'

recipe_hash=$( { cat "$0"; "$PY" --version; } | sha256sum | cut -c1-16)
stamp=$VENV/.installed-$recipe_hash

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    echo "ndif stack: apt-get install ${need_apt[*]}"
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts its own cluster/daemon on install; the stack runs private instances on free ports instead.
fi

if [ -f "$stamp" ]; then
    echo "ndif stack: $VENV up to date ($recipe_hash)"
    exit 0
fi
start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "$TORCH"
"$VENV/bin/pip" install -q "$TORCH" "${DEPS[@]}"
"$VENV/bin/pip" install -q --no-deps --ignore-requires-python "$NDIF"
touch "$stamp"
echo "ndif stack: installed $VENV in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
