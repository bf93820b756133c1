#!/usr/bin/env bash
# Regenerates protocols/src/generated/ from the .proto files beside this script.
# Needs pb-rs (quick-protobuf's generator): cargo install pb-rs --locked
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/generated"
rm -rf "$out"
mkdir -p "$out"
pb-rs --dont_use_cow --output_directory "$out" "$here"/*.proto
# pb-rs writes a mod.rs per package path; keep the tree as generated and format it.
rustfmt --edition 2024 "$out"/mod.rs 2>/dev/null || true
find "$out" -name '*.rs' -exec rustfmt --edition 2024 {} + 2>/dev/null || true
