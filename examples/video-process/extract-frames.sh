#!/bin/sh
# video-frames: write one JPEG per second of the input video to $TMP_OUTPUT_DIR,
# named <video-basename>-0001.jpg, -0002.jpg, ... (each one becomes a detect-faces job).
#
# ffmpeg: $FFMPEG if set, else `ffmpeg` on PATH (the demo image), else the binary bundled with the
# imageio-ffmpeg Python package (host runs, where python3 is the venv with the demo extra).
set -eu

: "${INPUT_FILE_PATH:?INPUT_FILE_PATH is not set}"
: "${TMP_OUTPUT_DIR:?TMP_OUTPUT_DIR is not set}"

if [ -n "${FFMPEG:-}" ]; then
    ffmpeg_bin=$FFMPEG
elif command -v ffmpeg >/dev/null 2>&1; then
    ffmpeg_bin=ffmpeg
else
    ffmpeg_bin=$(python3 -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())') \
        || { echo "extract-frames: no ffmpeg (set FFMPEG, install ffmpeg or imageio-ffmpeg)" >&2; exit 1; }
fi

name=$(basename "$INPUT_FILE_PATH")
base=${name%.*}
# ffmpeg expands %-sequences in the output pattern: a literal % in the name must be doubled.
pattern=$(printf '%s' "$base" | sed 's/%/%%/g')-%04d.jpg

# -q:v 2: high JPEG quality, so the detector sees what the video has, not compression blocks.
"$ffmpeg_bin" -hide_banner -loglevel error -nostdin -i "$INPUT_FILE_PATH" \
    -vf fps=1 -q:v 2 "$TMP_OUTPUT_DIR/$pattern"

count=$(find "$TMP_OUTPUT_DIR" -maxdepth 1 -type f -name '*.jpg' | wc -l)
if [ "$count" -eq 0 ]; then
    echo "extract-frames: ffmpeg wrote no frame for $name" >&2
    exit 1
fi
echo "extract-frames: $name -> $count frame(s) at 1 fps ($base-0001.jpg ...)"
