#!/bin/bash
FILE_NAME=$(basename "$INPUT_FILE_PATH")
convert "$INPUT_FILE_PATH" -type Grayscale "$TMP_OUTPUT_DIR/$FILE_NAME"
