#!/usr/bin/env bash
# Set up a real ComfyUI (source snapshot + venv + frontend) OUTSIDE this repository, for the checks against a real
# ComfyUI: scripts/comfyui_check.py, scripts/frontend_check.py, tests/test_comfyui_integration.py.
# By hand only: CI never runs it (it needs a ComfyUI source and a few GB of packages). It downloads no model
# weights: the example workflows use the pack's bundled toy model. Safe to run again on the same TARGET.
#
#   bash scripts/setup_real_comfyui.sh SOURCE TARGET [FRONTEND_VERSION]
#
#   SOURCE            a ComfyUI git directory (bare mirror or .git; HEAD is used) or a ComfyUI source folder
#   TARGET            where the install goes, e.g. /work/comfyui-0.33.0 (created; never inside this repository)
#   FRONTEND_VERSION  optional: also install comfyui-frontend-package==VERSION (besides the one ComfyUI pins) into
#                     TARGET/frontends/VERSION, to be put first on PYTHONPATH when starting ComfyUI
#
# Environment: TORCH_PAIR (default "torch==2.14.1 torchvision==0.29.1"), TORCHAUDIO (default "torchaudio==2.11.0",
# installed without dependencies), PACK_DIR (default: this repository; linked into custom_nodes), PYTHON (default
# python3). The torch pair is pinned by a constraints file on every later pip call, so that ComfyUI's requirements
# cannot replace it.
#
# At the end it prints the commands that start the server and run the checks.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
SOURCE=$(realpath "$1")
TARGET=$(realpath -m "$2")
FRONTEND_VERSION=${3:-}
PACK_DIR=$(realpath "${PACK_DIR:-$(dirname "$0")/..}")
PYTHON=${PYTHON:-python3}
TORCH_PAIR=${TORCH_PAIR:-"torch==2.14.1 torchvision==0.29.1"}
TORCHAUDIO=${TORCHAUDIO:-"torchaudio==2.11.0"}
MARKER="$TARGET/.setup_real_comfyui"

log() { printf '[setup_real_comfyui] %s\n' "$*"; }
die() { printf '[setup_real_comfyui] error: %s\n' "$*" >&2; exit 1; }

case "$TARGET/" in
  "$PACK_DIR"/*) die "TARGET $TARGET is inside the pack's repository $PACK_DIR: put it outside (ComfyUI's code is never committed)";;
esac

# 1. ComfyUI's source. A mirror may lack a few large blobs (tokenizer files of text encoders the toy workflows do not
#    use): those paths are left out and listed.
copy_source() {
  if [ -f "$MARKER" ]; then
    log "source already in $TARGET (from $(cat "$MARKER")); not copied again"
    return
  fi
  if [ -e "$TARGET" ] && [ -n "$(ls -A "$TARGET")" ]; then
    die "$TARGET exists and is not an install made by this script: choose an empty or new folder"
  fi
  mkdir -p "$TARGET"
  if [ -f "$SOURCE/main.py" ] && [ -f "$SOURCE/comfyui_version.py" ]; then
    log "copying ComfyUI's own files from the source folder $SOURCE"
    if git -C "$SOURCE" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      (cd "$SOURCE" && git ls-files -z | tar --null -T - -cf -) | tar -C "$TARGET" -xf -
    else
      # not a checkout: everything but the user's things (models, outputs, other custom nodes, settings, venv);
      # of models/ and custom_nodes/ only the folders and the files ComfyUI ships at their top
      (cd "$SOURCE" && {
        find . -path ./.git -prune -o -path ./.venv -prune -o -path ./models -prune -o -path ./custom_nodes -prune \
          -o -path ./output -prune -o -path ./input -prune -o -path ./temp -prune -o -path ./user -prune \
          -o -type f -print0
        find ./models \( -type d -o -name 'put_*_here' -o -name '*.yaml' \) -print0
        find ./custom_nodes -maxdepth 1 -type f -print0
      } | tar --null --no-recursion -T - -cf -) | tar -C "$TARGET" -xf -
    fi
    mkdir -p "$TARGET/custom_nodes"
    echo "$SOURCE" > "$MARKER"
  elif git -C "$SOURCE" rev-parse --git-dir >/dev/null 2>&1; then
    local commit missing excludes=()
    commit=$(git -C "$SOURCE" rev-parse HEAD)
    missing=$(git -C "$SOURCE" ls-tree -r HEAD | awk '$2 == "blob" {print $3 " " $4}' \
      | while read -r oid path; do git -C "$SOURCE" cat-file -e "$oid" 2>/dev/null || echo "$path"; done)
    while IFS= read -r path; do
      [ -n "$path" ] || continue
      log "missing in the snapshot, left out: $path"
      excludes+=(":(exclude)$path")
    done <<< "$missing"
    log "archiving $SOURCE at $commit"
    # git still names each left-out blob ("error: invalid object ..."); only those lines are dropped
    git -C "$SOURCE" archive --format=tar HEAD -- . "${excludes[@]}" 2> >(grep -v '^error: invalid object ' >&2) \
      | tar -C "$TARGET" -xf -
    echo "$SOURCE@$commit" > "$MARKER"
  else
    die "SOURCE $SOURCE is neither a ComfyUI source folder (main.py, comfyui_version.py) nor a git directory"
  fi
}

# 2. A venv with the torch pair (pinned from here on), torchaudio without its dependencies, ComfyUI's requirements,
#    the pack's requirements, playwright (for frontend_check.py; the browser is the system's Chromium) and pytest.
install_python() {
  local venv="$TARGET/.venv" constraints="$TARGET/.venv/torch-constraints.txt"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --quiet)
  if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    log "installing $TORCH_PAIR"
    # shellcheck disable=SC2086  # the pair is two words on purpose
    "${pip[@]}" install $TORCH_PAIR
  fi
  "$venv/bin/python" -m pip freeze | grep -E '^(torch|torchvision)==' > "$constraints"
  log "pinned: $(tr '\n' ' ' < "$constraints")"
  if ! "$venv/bin/python" -c "import torchaudio" 2>/dev/null; then
    "${pip[@]}" install --no-deps "$TORCHAUDIO"
  fi
  log "installing ComfyUI's requirements.txt"
  "${pip[@]}" install -c "$constraints" -r "$TARGET/requirements.txt"
  log "installing the pack's requirements.txt, playwright and pytest (for the checks)"
  "${pip[@]}" install -c "$constraints" -r "$PACK_DIR/requirements.txt" playwright pytest
  "$venv/bin/python" -m pip check >/dev/null || log "pip check reports conflicts (see: $venv/bin/python -m pip check)"
}

# 3. The pack, as a link (the checks then always see the pack as it is in PACK_DIR).
link_pack() {
  local link="$TARGET/custom_nodes/ComfyUI-MotionInversion"
  mkdir -p "$TARGET/custom_nodes"
  if [ -L "$link" ] || [ ! -e "$link" ]; then
    ln -sfn "$PACK_DIR" "$link"
    log "custom_nodes/ComfyUI-MotionInversion -> $PACK_DIR"
  else
    die "$link exists and is not a link: move it away first"
  fi
}

# 4. An extra frontend version, beside the one ComfyUI's requirements pin.
install_frontend() {
  [ -n "$FRONTEND_VERSION" ] || return 0
  local dir="$TARGET/frontends/$FRONTEND_VERSION"
  if [ -f "$dir/comfyui_frontend_package/__init__.py" ]; then
    log "frontend $FRONTEND_VERSION already in $dir"
    return
  fi
  log "installing comfyui-frontend-package==$FRONTEND_VERSION into $dir"
  "$TARGET/.venv/bin/python" -m pip --quiet install --no-deps --target "$dir" "comfyui-frontend-package==$FRONTEND_VERSION"
}

# 5. Headless Chromium for frontend_check.py (Debian's package; needs root).
check_chromium() {
  if command -v chromium >/dev/null; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    log "no chromium found: install your system's Chromium for scripts/frontend_check.py"
  fi
}

copy_source
install_python
link_pack
install_frontend
check_chromium

VERSION=$("$TARGET/.venv/bin/python" -c "import sys; sys.path.insert(0, '$TARGET'); import comfyui_version; print(comfyui_version.__version__)")
PINNED=$("$TARGET/.venv/bin/python" -c "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))")
cat <<EOF

ComfyUI $VERSION in $TARGET (pinned frontend $PINNED${FRONTEND_VERSION:+; extra frontend $FRONTEND_VERSION in $TARGET/frontends/$FRONTEND_VERSION}).
Start it (one server at a time; OMP_NUM_THREADS=1 on a shared CPU):
  cd $TARGET && OMP_NUM_THREADS=1 .venv/bin/python main.py --cpu --listen 127.0.0.1 --port 8188 --disable-api-nodes --database-url sqlite:///:memory:
EOF
if [ -n "$FRONTEND_VERSION" ]; then
cat <<EOF
With frontend $FRONTEND_VERSION instead of the pinned one (its log line "comfyui-frontend-package version: ..." says which one it serves):
  cd $TARGET && PYTHONPATH=$TARGET/frontends/$FRONTEND_VERSION OMP_NUM_THREADS=1 .venv/bin/python main.py --cpu --listen 127.0.0.1 --port 8188 --disable-api-nodes --database-url sqlite:///:memory:
EOF
fi
cat <<EOF
Then, from $PACK_DIR:
  OMP_NUM_THREADS=1 $TARGET/.venv/bin/python scripts/comfyui_check.py --comfyui-url http://127.0.0.1:8188 --comfyui-dir $TARGET --steps 20
  OMP_NUM_THREADS=1 $TARGET/.venv/bin/python scripts/frontend_check.py --url http://127.0.0.1:8188 --steps 20
  COMFYUI_DIR=$TARGET COMFYUI_URL=http://127.0.0.1:8188 OMP_NUM_THREADS=1 $TARGET/.venv/bin/python -m pytest -c tests/pytest.ini tests/test_comfyui_integration.py
EOF
