"""The environment a service's script sees: the supervisor contract of OSCAR and SCAR.

These names are the interface between Conveyor and every script written for OSCAR; they are
defined here once and nowhere else.
"""

INPUT_FILE_PATH = "INPUT_FILE_PATH"
"""The input file: the downloaded object, or the body of an HTTP invocation saved as a file."""
INPUT_FILE_PATHS = "INPUT_FILE_PATHS"
"""A Conveyor extension: every input file of the run, one path per line. One unless the service runs
batches in one folder (`batch.mode: directory`); `INPUT_FILE_PATH` names the first."""
TMP_INPUT_DIR = "TMP_INPUT_DIR"
"""The directory holding the input file."""
TMP_OUTPUT_DIR = "TMP_OUTPUT_DIR"
"""Everything the script leaves here (subfolders kept) is uploaded to the service's outputs."""
STORAGE_OBJECT_KEY = "STORAGE_OBJECT_KEY"
"""Storage events only: the key of the object inside its bucket, e.g. `in/cat.jpg`."""
EVENT = "EVENT"
"""Storage events: the event in MinIO/S3 notification JSON. HTTP invocations: the raw body."""
EVENT_TIME = "EVENT_TIME"
"""Storage events only: when the object was stored (RFC 3339)."""
JOB_UUID = "JOB_UUID"
"""The job's name, `<service>-<uuid4>`."""
OSCAR_SERVICE_NAME = "OSCAR_SERVICE_NAME"
"""The service's name, as OSCAR sets it."""

PRODUCER_JOB_METADATA = "conveyor-job"
"""S3 user metadata on every output: the job that wrote it (provenance survives the trip through the store)."""
PRODUCER_DEPTH_METADATA = "conveyor-depth"
"""S3 user metadata on every output: that job's lineage depth, to stop chains that trigger themselves."""

EVENT_ENV_LIMIT = 64 * 1024
"""Bodies larger than this are not copied into `$EVENT`: one environment string may not exceed
128 KiB on Linux, and the script reads the same bytes from `$INPUT_FILE_PATH` anyway."""
