#!/bin/sh
# test_install.sh BUILD_DIR SOURCE_DIR MODEL_DIR CC "EXTRA_CFLAGS"
# Installs the build into a temporary prefix, checks the installed files, checks that liblmx.so
# exports exactly the LMX_API functions of lmx.h, then builds examples/embed.c against lmx.h alone
# with pkg-config — once with the shared library (run with LD_LIBRARY_PATH), once with the static
# one (`pkg-config --static`) — and runs both on a tiny model. Exit 77 (skip) without the model.
set -eu
build=$1 src=$2 model=$3 cc=$4 extra=${5:-}
if [ ! -f "$model/tokenizer.json" ]; then
  echo "SKIP: no test model at $model (made by the engine_models_setup test)"
  exit 77
fi
prefix=$(mktemp -d /tmp/lmx-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$prefix/lib
[ -d "$libdir/pkgconfig" ] || libdir=$(dirname "$(find "$prefix" -name lmx.pc | head -n1)")/..
for f in "$prefix/include/lmx.h" "$libdir/liblmx.a" "$libdir/liblmx.so" "$libdir/pkgconfig/lmx.pc" "$prefix/bin/lmx"; do
  [ -e "$f" ] || { echo "FAIL: $f was not installed"; exit 1; }
done
"$prefix/bin/lmx" version >/dev/null

# the shared library exports exactly what lmx.h marks LMX_API
sed -n 's/^LMX_API[^(]*[ *]\(lmx_[a-z0-9_]*\)(.*/\1/p' "$prefix/include/lmx.h" | sort -u > "$prefix/api.txt"
nm -D --defined-only "$libdir/liblmx.so" | awk '$2 ~ /^[TtWwDdBbRrVv]$/ {print $3}' | sed 's/@.*//' | sort -u > "$prefix/exported.txt"
if ! cmp -s "$prefix/api.txt" "$prefix/exported.txt"; then
  echo "FAIL: liblmx.so exports differ from lmx.h's LMX_API functions (< lmx.h, > exported):"
  diff "$prefix/api.txt" "$prefix/exported.txt" || true
  exit 1
fi
[ "$(wc -l < "$prefix/api.txt")" -ge 20 ] || { echo "FAIL: found only $(wc -l < "$prefix/api.txt") API functions"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shared
$cc -std=c11 -Wall -Wextra -Werror $extra -o "$prefix/embed_shared" "$src/examples/embed.c" $(pkg-config --cflags --libs lmx)
LD_LIBRARY_PATH="$libdir" ldd "$prefix/embed_shared" | grep -q "liblmx.so" || { echo "FAIL: embed_shared is not linked to liblmx.so"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$prefix/embed_shared" "$model"
# static: the archive plus its private dependencies from `pkg-config --static`
$cc -std=c11 -Wall -Wextra -Werror $extra -o "$prefix/embed_static" "$src/examples/embed.c" \
    $(pkg-config --cflags lmx) $(pkg-config --static --libs lmx | sed 's/-llmx\b/-l:liblmx.a/')
if ldd "$prefix/embed_static" | grep -q "liblmx.so"; then echo "FAIL: embed_static uses liblmx.so"; exit 1; fi
"$prefix/embed_static" "$model" >/dev/null
echo "install test passed: $(wc -l < "$prefix/api.txt") exported functions, shared and static builds ran"
