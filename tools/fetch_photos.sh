#!/usr/bin/env bash
# Fetches the four photos scikit-image bundles (chelsea.png, coffee.png, astronaut.png,
# rocket.jpg) from its 0.26.0 wheel on PyPI into DIR (default target/photos), for the
# ResNet and preprocessing tests (tests/resnet_reference.rs) and tools/make_resnet_fixtures.py.
set -euo pipefail
dir="${1:-target/photos}"
if [ -f "$dir/rocket.jpg" ]; then exit 0; fi
mkdir -p "$dir"
url="https://files.pythonhosted.org/packages/a5/2a/e71c1a7d90e70da67b88ccc609bd6ae54798d5847369b15d3a8052232f9d/scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
sha="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
tmp="$(mktemp -d)"
curl -fsSL --retry 3 -o "$tmp/skimage.whl" "$url"
echo "$sha  $tmp/skimage.whl" | sha256sum -c --quiet
python3 - "$tmp/skimage.whl" "$dir" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(f"skimage/data/{name}"))
PY
rm -rf "$tmp"
