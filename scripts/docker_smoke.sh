#!/usr/bin/env bash
# Real container check: `docker build` of ./Dockerfile and `docker run --network none` of the image
# on small inputs, with the outputs checked. A candidate CI step (well under 25 min on 2 cores).
#
# No registry can be reached here, so the base image is made locally (debootstrap of Debian
# bookworm, brought in with `docker import`) and passed as BASE_IMAGE; the pinned wheels of
# requirements.lock are gathered on the host (pip's own configuration: local indexes, then PyPI)
# and served to the build from 127.0.0.1 (WHEELHOUSE_URL), so the build installs exactly the lock.
#
# Checks, all on CPU and without network at run time:
#   1. rescore workflow on a calcium phantom + its label map: status "scored", Agatston equal to
#      the phantom's analytic reference, SEG/SR/report files present, files owned by the
#      container's non-root user (uid 1000).
#   2. `docker run IMAGE` with no arguments (MHub default: --workflow default) on a chest phantom
#      with severe coronary calcium (made by the image's `phantom` command): exit 0, status
#      "scored", calcium found, the CPU fall-back line in the log; and, when ../shared/data/ct is
#      present, on a real low-resolution chest CT: exit 0, no failed series.
#      (Without config/default.yml: the import workflow on the real CT.)
#   3. the compose file's CPU service (docker-compose, when installed) on the phantom.
#
# Exit 0 with "docker-smoke: SKIP: <why>" when this machine cannot do it (no dockerd, no
# debootstrap, no network for the one-time preparation): environment problems never fail CI.
# Exit 1 with "docker-smoke: FAIL: <why>" when the image does not build or its outputs are wrong.
#
# Environment: CAC_MHUB_SMOKE_BASE (an existing base image to use instead of the debootstrap one),
# CAC_MHUB_SMOKE_CACHE (wheelhouse/rootfs cache, default /var/cache/cac-mhub-docker),
# CAC_MHUB_SMOKE_KEEP=1 (keep the work folder), CAC_MHUB_SMOKE_BUILD_TIMEOUT (s, default 1200),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), PYTHON (host python with pip).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TAG=cac-mhub:smoke
BASE=${CAC_MHUB_SMOKE_BASE:-cac-mhub-localbase:bookworm}
CACHE=${CAC_MHUB_SMOKE_CACHE:-/var/cache/cac-mhub-docker}
BUILD_TIMEOUT=${CAC_MHUB_SMOKE_BUILD_TIMEOUT:-1200}
RUN_TIMEOUT=600
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONTAINER_UID=1000
SHARED_CT="$REPO/../shared/data/ct/cip_ct64_chest_lowres/dicom"

say() { printf 'docker-smoke: %s\n' "$*"; }
skip() { say "SKIP: $*"; exit 0; }
fail() { say "FAIL: $*"; exit 1; }
now() { date +%s; }
is_root() { [ "$(id -u)" = 0 ]; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cac-mhub-smoke.XXXXXX")
chmod 755 "$WORK"
DOCKERD_PID="" HTTP_PID="" CONTAINERS=()
cleanup() {
    for name in "${CONTAINERS[@]}"; do docker rm -f "$name" >/dev/null 2>&1 || true; done
    if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null || true; fi
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    if [ "${CAC_MHUB_SMOKE_KEEP:-0}" = 1 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

apt_install() {  # apt_install PACKAGE...: best effort, root only
    is_root || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >/dev/null 2>&1 || return 1
    timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

# --- 1. a docker daemon --------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1; then
        say "installing docker.io (Debian) ..."
        apt_install docker.io || skip "no dockerd and docker.io cannot be installed (not root, or no apt network)"
    fi
    is_root || skip "docker daemon not reachable and not root to start one"
    say "starting dockerd ..."
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    docker info >/dev/null 2>&1 || skip "dockerd did not start: $(tail -n 2 "$WORK/dockerd.log" | tr '\n' ' ')"
fi
driver=$(docker info --format '{{.Driver}}' 2>/dev/null || echo unknown)
[ "$driver" = vfs ] && skip "docker uses the vfs storage driver here: a 7 GB image would copy for too long"
say "docker server $(docker version --format '{{.Server.Version}}' 2>/dev/null), storage driver $driver"

# --- 2. a base image, made locally ------------------------------------------------------------------
mkdir -p "$CACHE"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    [ "$BASE" = cac-mhub-localbase:bookworm ] || skip "base image $BASE not present locally and no registry"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || skip "debootstrap not available"
    is_root || skip "debootstrap needs root"
    say "debootstrap bookworm (minbase) ..."
    rootfs="$CACHE/rootfs-bookworm"
    rm -rf "$rootfs"
    timeout 900 debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || skip "debootstrap failed (no network to $MIRROR?): $(tail -n 1 "$WORK/debootstrap.log")"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi
timeout 300 docker run --rm --network host "$BASE" apt-get update -qq >/dev/null 2>&1 \
    || skip "the build cannot reach the base image's apt repositories"

# --- 3. the pinned wheels, served on 127.0.0.1 ---------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
"$PY" -m pip --version >/dev/null 2>&1 || skip "no python with pip on the host ($PY)"
wheels="$CACHE/wheels"
tooling="$REPO/docker/requirements-tooling.txt"
stamp=$(cat "$REPO/requirements.lock" "$tooling" | sha256sum | cut -c1-16)
if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "gathering the pinned wheels ..."
    rm -rf "$wheels" && mkdir -p "$wheels"
    timeout 1200 "$PY" -m pip wheel --quiet --no-deps -r "$REPO/requirements.lock" -w "$wheels" >"$WORK/wheels.log" 2>&1 \
        || skip "cannot gather the pinned wheels (no package index?): $(tail -n 1 "$WORK/wheels.log")"
    timeout 300 "$PY" -m pip download --quiet --no-deps -d "$wheels" -r "$tooling" >>"$WORK/wheels.log" 2>&1 \
        || skip "cannot gather the tooling wheels: $(tail -n 1 "$WORK/wheels.log")"
    echo "$stamp" >"$wheels/.stamp"
fi
# A fixed port keeps WHEELHOUSE_URL, and so the build cache, the same from run to run.
port=38417
if ! "$PY" -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
    port=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
fi
"$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$wheels" >"$WORK/http.log" 2>&1 &
HTTP_PID=$!
for _ in $(seq 20); do
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.5
done

# --- 4. the build ----------------------------------------------------------------------------------------
say "docker build (base $BASE) ..."
start=$(now)
if ! timeout "$BUILD_TIMEOUT" docker build --network host \
    --build-arg BASE_IMAGE="$BASE" --build-arg WHEELHOUSE_URL="http://127.0.0.1:$port/" \
    -t "$TAG" "$REPO" >"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log"
    fail "docker build failed (log above)"
fi
build_s=$(( $(now) - start ))
kill "$HTTP_PID" 2>/dev/null || true
HTTP_PID=""
size_bytes=$(docker image inspect -f '{{.Size}}' "$TAG")
say "built $TAG in ${build_s} s; image size $(( size_bytes / 1000000 )) MB"

# --- 5. inputs -------------------------------------------------------------------------------------------
mkdir -p "$WORK/in/phantom"
chmod -R 777 "$WORK/in"
expected_json=$(timeout "$RUN_TIMEOUT" docker run --rm -i --network none -v "$WORK/in/phantom:/in" "$TAG" python - <<'PY'
# Runs inside the image, through the entrypoint's pass-through of plain commands.
import json
from pathlib import Path

import pydicom
import SimpleITK as sitk

from cac_mhub.phantom.calcium import make_calcium_phantom, write_calcium_phantom_dicom

phantom = make_calcium_phantom(increment_mm=3.0)
files = write_calcium_phantom_dicom(phantom, Path("/in/ct"))
series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
labels = sitk.GetImageFromArray(phantom.labels.astype("uint8"))
dz, dy, dx = phantom.spacing_zyx
labels.SetSpacing((dx, dy, dz))
labels.SetOrigin(tuple(float(v) for v in phantom.origin_lps))
Path("/in/labels").mkdir()
sitk.WriteImage(labels, f"/in/labels/{series_uid}.nii.gz")
print(json.dumps({"agatston": phantom.reference["agatston"], "series_uid": series_uid, "slices": len(files)}))
PY
) || fail "the image could not write the phantom (python in the image broken?)"
expected_json=$(printf '%s\n' "$expected_json" | tail -n 1)
say "phantom: $expected_json"

prepare_output() {  # a fresh output folder the container's user (uid 1000) can write
    rm -rf "$1" && mkdir -p "$1"
    if is_root; then chown "$CONTAINER_UID:$CONTAINER_UID" "$1"; else chmod 777 "$1"; fi
}

check_outputs() {  # check_outputs OUTPUT_DIR MODE [EXPECTED_JSON]: the outputs, judged on the host
    "$PY" - "$@" <<'PY'
import json
import math
import sys
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]
expected = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
problems = []
cohort = out / "cohort.json"
if not cohort.is_file() or not (out / "cohort.csv").is_file():
    sys.exit(f"no cohort.json / cohort.csv in {out}")
reports = sorted(out.glob("*/report.json"))
if not reports:
    sys.exit("no per-series report.json")
statuses = {}
for path in reports:
    report = json.loads(path.read_text())
    statuses[path.parent.name] = report["status"]
    for name, rel in report.get("outputs", {}).items():
        if not (out / rel).exists():
            problems.append(f"{path.parent.name}: output {name} listed but missing: {rel}")
    if expected and report.get("series", {}).get("series_uid") == expected["series_uid"]:
        if report["status"] != "scored":
            problems.append(f"phantom not scored: {report['status']} {report.get('reason')}")
        else:
            got = report["scores"]["agatston"]
            print(f"phantom Agatston: {got} (reference {expected['agatston']})")
            if mode == "exact" and not math.isclose(got, expected["agatston"], rel_tol=1e-6, abs_tol=1e-3):
                problems.append(f"phantom Agatston {got} != analytic {expected['agatston']}")
            if mode == "found" and not got > 0:
                problems.append(f"no calcium found in a phantom whose reference Agatston is {expected['agatston']}")
if any(s == "failed" for s in statuses.values()):
    problems.append(f"failed series: {statuses}")
owners = {p.stat().st_uid for p in out.rglob("*")}
if owners != {1000}:
    problems.append(f"outputs owned by uids {sorted(owners)}, expected the container user 1000")
# ".cac-mhub" is the run's ownership marker in each series folder (src/cac_mhub/output.py), not a temporary
leftovers = [p.name for p in out.rglob("*")
             if (p.name.startswith(".") and p.name != ".cac-mhub") or p.name.endswith((".tmp", ".part"))]
if leftovers:
    problems.append(f"temporary files left: {leftovers[:5]}")
private = sorted(p.name for p in out.rglob("*") if p.is_file() and not p.stat().st_mode & 0o004)
if private:  # a host user other than uid 1000 could not read these
    print(f"WARNING: outputs not world-readable: {private[:6]}")
print(f"series: {statuses}")
sys.exit("; ".join(problems) if problems else 0)
PY
}

run_image() {  # run_image NAME INPUT_DIR OUTPUT_DIR [ARGS...]: docker run --network none, timed
    local name=$1 input=$2 output=$3
    shift 3
    prepare_output "$output"
    local t0 container="cac-mhub-smoke-$name-$$"
    CONTAINERS+=("$container")
    t0=$(now)
    if ! timeout "$RUN_TIMEOUT" docker run --rm --name "$container" --network none \
        -v "$input:/app/data/input_data:ro" -v "$output:/app/data/output_data" \
        "$TAG" "$@" >"$WORK/run-$name.log" 2>&1; then
        tail -n 20 "$WORK/run-$name.log"
        fail "run '$name' exited non-zero (log above)"
    fi
    say "run '$name' ($*): $(( $(now) - t0 )) s"
}

# --- 6. rescore on the phantom: exact analytic score -------------------------------------------------
run_image rescore "$WORK/in/phantom" "$WORK/out-rescore" --workflow rescore
check_outputs "$WORK/out-rescore" exact "$expected_json" || fail "rescore outputs wrong"
find "$WORK/out-rescore" -type f | sed "s|^$WORK/out-rescore/|docker-smoke:   |" | sort

# --- 7. the MHub default: no arguments ---------------------------------------------------------------------
if [ -f "$REPO/config/default.yml" ]; then
    # A chest phantom with severe coronary calcium, written by the image's own `phantom` subcommand.
    mkdir -p "$WORK/in/thorax" && chmod 777 "$WORK/in/thorax"
    timeout "$RUN_TIMEOUT" docker run --rm --network none -v "$WORK/in/thorax:/in" "$TAG" \
        phantom --output /in --seed 7 --size 128 --increment 3 --burden severe >"$WORK/thorax.log" 2>&1 \
        || { cat "$WORK/thorax.log"; fail "the image's phantom command failed"; }
    thorax=$(find "$WORK/in/thorax" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    thorax_json=$("$PY" -c "import json,sys; t=json.load(open(sys.argv[1])); print(json.dumps({'agatston': t['reference']['agatston'], 'series_uid': t['series_uid']}))" "$thorax/truth.json")
    say "thorax phantom: $thorax_json"
    run_image default "$thorax/dicom" "$WORK/out-default"
    check_outputs "$WORK/out-default" found "$thorax_json" || fail "default workflow outputs wrong"
    if grep -q "NnunetCacRunner" "$REPO/config/default.yml"; then
        grep -q "no GPU found, running on CPU" "$WORK/run-default.log" \
            || fail "default run on a machine without GPU did not log the CPU fall-back"
    fi
    default_args=()
else
    say "config/default.yml not in this checkout yet: checking the import workflow instead"
    default_args=(--workflow import)
fi
if [ -d "$SHARED_CT" ]; then
    run_image real-ct "$SHARED_CT" "$WORK/out-real-ct" "${default_args[@]}"
    check_outputs "$WORK/out-real-ct" structure || fail "real CT outputs wrong"
else
    say "no $SHARED_CT: real-CT run left out"
fi

# --- 8. docker compose, CPU service ---------------------------------------------------------------------
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose; then compose=(docker-compose)
fi
if [ "${#compose[@]}" -gt 0 ]; then
    prepare_output "$WORK/out-compose"
    t0=$(now)
    CAC_MHUB_TAG=smoke CAC_MHUB_INPUT="$WORK/in/phantom" CAC_MHUB_OUTPUT="$WORK/out-compose" CAC_MHUB_WORKFLOW=rescore \
        timeout "$RUN_TIMEOUT" "${compose[@]}" -f "$REPO/docker-compose.yml" -p cac-mhub-smoke run --rm cac-mhub-cpu \
        >"$WORK/run-compose.log" 2>&1 || { tail -n 20 "$WORK/run-compose.log"; fail "compose CPU service failed"; }
    say "compose run cac-mhub-cpu (rescore): $(( $(now) - t0 )) s"
    check_outputs "$WORK/out-compose" exact "$expected_json" || fail "compose outputs wrong"
else
    say "no docker compose here: compose run left out"
fi

say "OK: build ${build_s} s, image $(( size_bytes / 1000000 )) MB, runs passed"
