#!/bin/bash
echo "SCRIPT: classifying $INPUT_FILE_PATH with model $MODEL"
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"
