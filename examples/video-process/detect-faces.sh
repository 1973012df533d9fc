#!/bin/sh
# detect-faces: find frontal faces in one frame with OpenCV's Haar cascade and write, to $TMP_OUTPUT_DIR,
#   <frame-basename>-annotated.jpg  the frame with a box around each face
#   <frame-basename>.json           {"frame", "faces": [[x, y, w, h], ...], "count", "width", "height"}
#
# Works with opencv-python(-headless) from PyPI (cascades in cv2.data.haarcascades) and with Debian's
# python3-opencv + opencv-data (cascades in /usr/share/opencv4/haarcascades).
set -eu

: "${INPUT_FILE_PATH:?INPUT_FILE_PATH is not set}"
: "${TMP_OUTPUT_DIR:?TMP_OUTPUT_DIR is not set}"

exec python3 - "$INPUT_FILE_PATH" <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

import cv2

CASCADE = "haarcascade_frontalface_default.xml"


def cascade_path():
    """The first cascade file found: the pip wheel's data dir, then Debian's (and older Debian's) dirs."""
    dirs = []
    haar_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if haar_dir:
        dirs.append(Path(haar_dir))
    dirs += [Path("/usr/share/opencv4/haarcascades"), Path("/usr/share/opencv/haarcascades")]
    for d in dirs:
        if (d / CASCADE).is_file():
            return d / CASCADE
    sys.exit(f"detect-faces: {CASCADE} not found in {', '.join(map(str, dirs))}")


def detect(image):
    """Face boxes as [x, y, w, h] lists of plain ints (numpy ints are not JSON serialisable)."""
    classifier = cv2.CascadeClassifier(str(cascade_path()))
    if classifier.empty():
        sys.exit("detect-faces: could not load the Haar cascade")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    # Stricter than OpenCV's usual minNeighbors=3-5, which (like equalizeHist) also boxes the bright wall
    # beside the shuttle in the astronaut picture; minSize drops tiny hits in textures such as cat fur.
    faces = classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=8, minSize=(40, 40))
    return [[int(v) for v in box] for box in faces]


def main():
    started = time.perf_counter()
    src = Path(sys.argv[1])
    out_dir = Path(os.environ["TMP_OUTPUT_DIR"])
    image = cv2.imread(str(src))
    if image is None:
        sys.exit(f"detect-faces: cannot read an image from {src}")
    faces = detect(image)
    for x, y, w, h in faces:
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 0), 3)
    annotated = out_dir / f"{src.stem}-annotated.jpg"
    if not cv2.imwrite(str(annotated), image):
        sys.exit(f"detect-faces: could not write {annotated}")
    height, width = image.shape[:2]
    report = {"frame": src.name, "faces": faces, "count": len(faces), "width": width, "height": height}
    (out_dir / f"{src.stem}.json").write_text(json.dumps(report) + "\n")
    elapsed = time.perf_counter() - started
    print(f"detect-faces: {src.name}: {len(faces)} face(s) {faces} in {elapsed:.2f}s")


main()
EOF
