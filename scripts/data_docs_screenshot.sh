#!/usr/bin/env bash
# Screenshots of an ingested version's Data Docs in headless Chromium: the site's index and the
# users table's validation result. Needs a Chromium (Debian: apt-get install chromium).
#   scripts/data_docs_screenshot.sh data-docs/movielens-100k docs
# Offline, the pages' stylesheets and scripts (CDN links GX writes) do not load: the pages show
# unstyled, and the index's list of validation results (filled by a script) stays empty.
set -euo pipefail
site=${1:?usage: scripts/data_docs_screenshot.sh data-docs/<dataset> [out-folder]}
out=${2:-docs}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}
shot() {  # shot PAGE PNG HEIGHT
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="1400,$3" \
        --screenshot="$2" "file://$(realpath "$1")" 2>/dev/null
}
mkdir -p "$out"
shot "$site/index.html" "$out/data-docs-index.png" 700
page=$(find "$site/validations" -path "*/users/*" -name "*.html" | sort | tail -1)
shot "$page" "$out/data-docs-users-validation.png" 1400
echo "written: $out/data-docs-index.png $out/data-docs-users-validation.png"
