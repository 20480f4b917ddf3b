#!/bin/sh
# cac-mhub container entrypoint, MHub-style: `docker run IMAGE` scores every CT series found in
# /app/data/input_data with the default workflow and writes to /app/data/output_data.
#
#   (no arguments)              -> cac-mhub run --workflow default
#   --workflow rescore ...      -> cac-mhub run --workflow rescore ...   (options go to `run`)
#   run [options]               -> cac-mhub run [options], --workflow default unless given
#   models | phantom | ...      -> cac-mhub models | phantom | ...       (other subcommands)
#   watch | pacs ...            -> cac-mhub watch | pacs ... (PACS round trip; no input folder;
#                                  named here because `watch` is also a Linux command)
#   bash | python | any command -> that command (debugging)
#
# The same script runs outside Docker: CAC_MHUB_INPUT_DIR / CAC_MHUB_OUTPUT_DIR replace the
# /app/data folders and CAC_MHUB_BIN the `cac-mhub` executable. It checks the folders before the
# chain starts so that a forgotten or read-only volume gives one clear line instead of a traceback.
set -eu

input_dir=${CAC_MHUB_INPUT_DIR:-/app/data/input_data}
output_dir=${CAC_MHUB_OUTPUT_DIR:-/app/data/output_data}
cli=${CAC_MHUB_BIN:-cac-mhub}
default_workflow=${CAC_MHUB_WORKFLOW:-default}

say() { printf 'cac-mhub-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

# Decide what is being asked for.
if [ "$#" -eq 0 ]; then
    set -- run
elif [ "$1" = "run" ]; then
    :
elif [ "${1#-}" != "$1" ]; then
    set -- run "$@"
elif [ "$1" = "cac-mhub" ]; then
    shift
    exec "$cli" "$@"
elif [ "$1" = "watch" ] || [ "$1" = "pacs" ]; then
    exec "$cli" "$@"
elif command -v "$1" >/dev/null 2>&1; then
    exec "$@"
else
    exec "$cli" "$@"
fi
shift  # drop "run"; the remaining arguments are options of `cac-mhub run`

# Which of the run options did the caller give? (`--opt value` and `--opt=value` forms.)
has_input=no has_output=no has_workflow=no wants_help=no
previous=""
for arg in "$@"; do
    case "$previous" in
        --input) input_dir=$arg ;;
        --output) output_dir=$arg ;;
    esac
    case "$arg" in
        --input) has_input=yes ;;
        --input=*) has_input=yes; input_dir=${arg#--input=} ;;
        --output) has_output=yes ;;
        --output=*) has_output=yes; output_dir=${arg#--output=} ;;
        --workflow|--workflow=*|--config|--config=*) has_workflow=yes ;;
        -h|--help) wants_help=yes ;;
    esac
    previous=$arg
done

if [ "$wants_help" = yes ]; then
    exec "$cli" run "$@"
fi

# Pre-flight: the mounted folders.
[ -d "$input_dir" ] || die "input folder $input_dir does not exist; mount your DICOM folder, e.g. -v /path/to/dicom:/app/data/input_data:ro"
if [ ! -r "$input_dir" ] || [ ! -x "$input_dir" ]; then
    die "input folder $input_dir is not readable by uid $(id -u)"
fi
if [ -z "$(ls -A "$input_dir" 2>/dev/null)" ]; then
    die "input folder $input_dir is empty; mount your DICOM folder, e.g. -v /path/to/dicom:/app/data/input_data:ro"
fi
if [ ! -d "$output_dir" ]; then
    mkdir -p "$output_dir" 2>/dev/null || die "cannot create output folder $output_dir"
fi
probe="$output_dir/.cac-mhub-write-test.$$"
if ! (: >"$probe") 2>/dev/null; then
    die "output folder $output_dir is not writable by uid $(id -u); run with --user \"\$(id -u):\$(id -g)\" or make the folder writable"
fi
rm -f "$probe"

set -- run "$@"
[ "$has_input" = yes ] || set -- "$@" --input "$input_dir"
[ "$has_output" = yes ] || set -- "$@" --output "$output_dir"
[ "$has_workflow" = yes ] || set -- "$@" --workflow "$default_workflow"

say "input $input_dir, output $output_dir"
exec "$cli" "$@"
