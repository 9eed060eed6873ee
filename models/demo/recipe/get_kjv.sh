#!/usr/bin/env bash
# get_kjv.sh — the training text of the demo model: the King James Bible from Debian's
# bible-kjv-text package (public domain: the translation dates from 1611; see the package's
# /usr/share/doc/bible-kjv-text/copyright). The package ships the text compressed in the format of
# the `bible` program (/usr/lib/bible.data, "EC02Compressed Data File"), so the `bible` program of
# the bible-kjv package (GPL-2+, only run here, not shipped) dumps it as plain text.
# Run on a machine with the Debian archive (not the GPU machine); writes recipe/data/kjv.txt (~4.3 MB,
# 73,811 lines: "Genesis 1" headings and numbered verses), which travels with the working tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download bible-kjv-text bible-kjv >/dev/null
dpkg-deb -x bible-kjv-text_*.deb text
dpkg-deb -x bible-kjv_*.deb prog
mkdir -p "$here/data"
prog/usr/bin/bible -p text/usr/lib/ "Gen1:1-Rev22:21" > "$here/data/kjv.txt"
cp text/usr/share/doc/bible-kjv-text/copyright "$here/data/kjv.copyright"
echo "wrote $here/data/kjv.txt ($(wc -c < "$here/data/kjv.txt") bytes)"
