#!/bin/sh
# Upper-cases the input into a file of the same name, followed by $SUFFIX.
name=$(basename "$INPUT_FILE_PATH")
printf '%s%s\n' "$(tr a-z A-Z < "$INPUT_FILE_PATH")" "$SUFFIX" > "$TMP_OUTPUT_DIR/$name"
