#!/bin/sh
# The standard container edit every system gets in the benchmark (same bytes for each): run against a mounted
# container root ($1), untimed. About 214 changes: a modified small file, a 16 MiB added file, a deleted tree
# from the lower layers, a deleted file, 200 added small files, a metadata-only change of a 6.8 MB file (overlay
# copy-up) and a mode change. $2 is the 16 MiB blob (default: the bench data directory's).
set -e
R=$1
BLOB=${2:-/var/tmp/graphdriver-bench/blob16m}
echo "x:x:1000:1000::/home/x:/bin/sh" >> "$R/etc/passwd"
cp "$BLOB" "$R/root/blob16m"
rm -rf "$R/usr/share/doc"
rm -f "$R/etc/issue"
mkdir -p "$R/app/new"
i=1; while [ $i -le 200 ]; do echo $i > "$R/app/new/f$i"; i=$((i + 1)); done
touch "$R/usr/bin/python3.11" 2>/dev/null || touch "$R/usr/bin/perl"
chmod 600 "$R/etc/hostname"
