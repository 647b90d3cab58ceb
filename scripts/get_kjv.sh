#!/usr/bin/env bash
# Writes the King James Bible (Debian package bible-kjv) as training text: one verse per line
# (verse numbers dropped, wrapped lines joined), one blank line between chapters, no book/chapter
# headers. These are the rules of fam::data::CleanKjvText (framework/data/corpus.cc); the awk below
# applies them so no build is needed, and tests/data_test.cc checks that both give the same text.
# Alternatively keep the raw `bible` output (--raw) and let prepare-data clean it in C++ with
# input_format "kjv".
#
#   scripts/get_kjv.sh OUT          cleaned text (~4.2 MB, 31102 verses, 1189 chapters)
#   scripts/get_kjv.sh --raw OUT    the raw `bible "Genesis 1:1-Revelation 22:21"` output
#   scripts/get_kjv.sh --verse-numbers OUT
#                                   cleaned, but each verse keeps its number ("1 In the beginning
#                                   ..."): text with digits, so a tokenizer and model trained on it
#                                   know digits (the fine-tuning demonstration's PassKey keys)
set -euo pipefail

RAW=0
KEEP_NUMBERS=0
case "${1:-}" in
  --raw) RAW=1; shift ;;
  --verse-numbers) KEEP_NUMBERS=1; shift ;;
esac
if [ $# -ne 1 ]; then
  echo "usage: $0 [--raw | --verse-numbers] OUT" >&2
  exit 2
fi
OUT=$1

if ! command -v bible > /dev/null 2>&1; then
  echo "get_kjv.sh: the 'bible' program (Debian package bible-kjv) is missing;" \
    "run scripts/setup.sh (or: sudo apt-get install bible-kjv)" >&2
  exit 1
fi

mkdir -p "$(dirname "$OUT")"
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT

if [ "$RAW" = 1 ]; then
  bible "Genesis 1:1-Revelation 22:21" > "$TMP"
else
  bible "Genesis 1:1-Revelation 22:21" | LC_ALL=C awk -v keep="$KEEP_NUMBERS" '
    function flush() {
      if (!have) return
      if (sep) print ""
      sep = 0; print verse; chapter_open = 1; verse = ""; have = 0
    }
    BEGIN { prev_blank = 1 }
    { sub(/[[:space:]]+$/, "") }
    $0 == "" { prev_blank = 1; next }
    /^ [[:space:]]*[0-9]+ / {
      flush(); verse = $0; have = 1
      number = verse; sub(/^[[:space:]]*/, "", number); sub(/[^0-9].*$/, "", number)
      sub(/^ [[:space:]]*[0-9]+ [[:space:]]*/, "", verse)
      if (keep) verse = number " " verse
      prev_blank = 0; next
    }
    prev_blank && /^[^[:space:]].* [0-9]+$/ {
      flush(); if (chapter_open) sep = 1; chapter_open = 0; prev_blank = 0; next
    }
    {
      line = $0; sub(/^[[:space:]]+/, "", line)
      if (have) verse = verse " " line; else { verse = line; have = 1 }
      prev_blank = 0
    }
    END { flush() }' > "$TMP"
fi

if [ ! -s "$TMP" ]; then
  echo "get_kjv.sh: 'bible' produced no text" >&2
  exit 1
fi
mv "$TMP" "$OUT"
trap - EXIT
echo "get_kjv.sh: wrote $OUT ($(wc -c < "$OUT") bytes, $(wc -l < "$OUT") lines)"
