#!/usr/bin/env bash
# pixvcs demo: version a small generated image dataset end to end.
#
#   usage: scripts/demo.sh DIR        (make demo runs it with DIR=demo-work)
#
# Expects the venv's `pixvcs` and `python` first on PATH; the Makefile runs
#   PATH=.venv/bin:$PATH bash scripts/demo.sh demo-work
# DIR is removed and recreated: never point it at anything you want to keep.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$1
case "$DIR" in
    / | . | .. | "$HOME") echo "refusing to remove $DIR" >&2; exit 2 ;;
esac

# Deterministic commits: the same author every run, no terminal progress bars.
export GIT_AUTHOR_NAME="pixvcs demo"
export GIT_AUTHOR_EMAIL="demo@example.org"
export CI=1

step() { printf '\n== %s\n' "$*"; }
counts() {
    # images per class folder, as they are in the work tree right now
    for d in */; do
        printf '  %-6s %3d\n' "${d%/}" "$(find "$d" -type f | wc -l)"
    done
}

step "1. a fresh directory: $DIR"
rm -rf -- "$DIR"
mkdir -p -- "$DIR"
cd -- "$DIR"

step "2. generate a dataset: 3 classes x 20 JPEGs, 64x64 (Pillow, deterministic)"
# GEN CLASS N: write CLASS/CLASS_000.jpg .. CLASS_<N-1>.jpg, each seeded by its name
GEN_PY=$(mktemp)
trap 'rm -f "$GEN_PY"' EXIT
cat > "$GEN_PY" <<'EOF'
import os
import random
import sys

from PIL import Image, ImageDraw

cls, n = sys.argv[1], int(sys.argv[2])
os.makedirs(cls, exist_ok=True)
for i in range(n):
    name = f"{cls}_{i:03d}"
    rng = random.Random(name)
    im = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.randrange(48), rng.randrange(48)
        box = (x0, y0, x0 + rng.randrange(8, 32), y0 + rng.randrange(8, 32))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    im.save(os.path.join(cls, name + ".jpg"), quality=90)
EOF
GEN="python $GEN_PY"
for cls in cat dog bird; do
    $GEN "$cls" 20
done
echo "wrote: $(find cat dog bird -name '*.jpg' | wc -l) JPEGs"
counts

step "3. pixvcs init, add, commit v1, tag v1"
pixvcs init .
pixvcs add .
pixvcs commit -m "v1: cats, dogs and birds"
pixvcs tag v1 -m "first version of the dataset"
echo "-- each image is a git-lfs pointer in git; its bytes live under their SHA-256:"
pixvcs ls v1 | sed -n 1,4p   # (sed, not head: no SIGPIPE under pipefail)
oid=$(pixvcs ls v1 --json | python -c '
import json, sys
print(next(e["oid"] for e in json.load(sys.stdin) if e["path"] == "cat/cat_000.jpg"))')
echo "   cat/cat_000.jpg -> .pixvcs/lfs/objects/${oid:0:2}/${oid:2:2}/$oid"

step "4. change the dataset"
echo "-- add a new class: 20 fish"
$GEN fish 20
echo "-- delete 3 dog images"
pixvcs rm dog/dog_017.jpg dog/dog_018.jpg dog/dog_019.jpg
echo "-- relabel: move cat/cat_005.jpg into dog/ (same bytes, new class)"
mv cat/cat_005.jpg dog/cat_005.jpg
echo "-- re-encode bird/bird_000.jpg at JPEG quality 40 (same path, new bytes)"
python - <<'EOF'
from PIL import Image

im = Image.open("bird/bird_000.jpg")
im.load()
im.save("bird/bird_000.jpg", quality=40)
EOF
pixvcs status

step "5. add everything and commit v2"
pixvcs add .
pixvcs commit -m "v2: add fish, drop 3 dogs, relabel a cat, re-encode a bird"
pixvcs tag v2

step "6. pixvcs diff v1 v2: images added/removed/modified/relabelled, per-class counts"
pixvcs diff v1 v2
echo "-- the re-encode in detail (--json; formats, sizes and dimensions from the catalog,"
echo "   phash_distance = bits that differ between the perceptual hashes, 0..64):"
pixvcs diff v1 v2 --json | python -c '
import json, sys
for path, facts in json.load(sys.stdin)["details"].items():
    print(f"   {path}:", json.dumps(facts, sort_keys=True))'

step "7. pixvcs log --oneline"
pixvcs log --oneline

step "8. pixvcs checkout v1: the work tree is exactly v1 again"
pixvcs checkout v1
counts

step "9. pixvcs checkout main: back to the newest version"
pixvcs checkout main
counts

step "10. pixvcs rollback v1: a new commit on main whose content is v1 (history kept)"
pixvcs rollback v1 -m "roll back to v1: the fish crawl was bad"
pixvcs log --oneline
counts
echo "-- nothing differs between v1 and the rolled-back main:"
pixvcs diff v1 main --stat

step "11. pixvcs fsck: every object reachable and every image hash verified"
pixvcs fsck

step "12. it is a git repository: stock git reads the history"
if command -v git >/dev/null; then
    git --git-dir=.pixvcs log --oneline --decorate
else
    echo "(git not installed; skipped)"
fi

printf '\ndemo finished: the repository is in %s\n' "$PWD"
