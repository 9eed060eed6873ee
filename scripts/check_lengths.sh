#!/bin/sh
# check_lengths.sh — the size rules of the codebase over the C and CUDA files of src/, tests/, bench/,
# fuzz/: files over 800 lines and functions over 150 lines (a function: a column-0 line holding "(",
# up to the next "}" alone at column 0). Prints each offender; exit status 1 when there is one.
# Usage: scripts/check_lengths.sh [REPO_ROOT] [FILE_LIMIT] [FUNCTION_LIMIT]
root=${1:-$(dirname "$0")/..}
flim=${2:-800}
glim=${3:-150}
cd "$root" || exit 2
files=$(find src tests bench fuzz \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
out=$( {
    for f in $files; do n=$(wc -l < "$f"); [ "$n" -gt "$flim" ] && echo "$n lines: $f (file)"; done
    # shellcheck disable=SC2086
    awk -v LIM="$glim" '
        FNR == 1 { start = 0 }
        /^[A-Za-z_]/ && /\(/ && !start { start = FNR; name = $0 }
        start == FNR && (/;[ \t]*(\/\*.*)?$/ || /\}[ \t]*$/) { start = 0 }
        /^\}$/ { if (start && FNR - start + 1 > LIM) printf "%d lines: %s:%d %s\n", FNR - start + 1, FILENAME, start, substr(name, 1, 70); start = 0 }
        /^\};?/ && !/^\}$/ { start = 0 }' $files
} )
[ -z "$out" ] && { echo "check_lengths: no file over $flim lines, no function over $glim"; exit 0; }
echo "$out"
exit 1
