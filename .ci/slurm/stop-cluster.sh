#!/usr/bin/env bash
# Stop the one-node SLURM cluster that .ci/slurm/start-cluster.sh started.
#
# Usage: .ci/slurm/stop-cluster.sh [--purge] [STATE_DIR]
#   STATE_DIR  the folder given to start-cluster.sh
#              (default: $IMAGEBENCH_SLURM_DIR, else /tmp/imagebench-slurm)
#   --purge    also delete STATE_DIR; by default its logs stay for inspection
#
# Cancels the jobs left on this cluster, then stops slurmd, slurmctld and
# munged by the pids in STATE_DIR's pid files, each only while its pid still
# belongs to that program, so nothing else on the machine is signalled. Removes
# /etc/slurm/slurm.conf when it is the link that start-cluster.sh made to
# STATE_DIR/slurm.conf, so that SLURM commands (and the Snakemake SLURM plugin
# when it loads) fail at once instead of waiting for a stopped controller.
set -euo pipefail

PURGE=0
if [[ "${1:-}" == "--purge" ]]; then
    PURGE=1
    shift
fi
STATE_DIR="${1:-${IMAGEBENCH_SLURM_DIR:-/tmp/imagebench-slurm}}"
STOP_TIMEOUT_S=20
DEFAULT_CONF=/etc/slurm/slurm.conf

log() { echo "stop-cluster: $*" >&2; }

pid_of() {
    local pid_file="$1" binary="$2" pid
    [[ -s "$pid_file" ]] || return 1
    pid="$(<"$pid_file")"
    # Compare the program name too, so that a recycled pid is never signalled.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$binary" ]] || return 1
    echo "$pid"
}

cancel_jobs() {
    pid_of "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null || return 0
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    local jobs deadline=$((SECONDS + STOP_TIMEOUT_S))
    jobs="$(squeue --noheader --format=%i 2>/dev/null || true)"
    [[ -n "$jobs" ]] || return 0

    # Job steps run under slurmstepd, which outlives slurmd, so they are
    # cancelled through slurmctld before the daemons stop.
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086 # one job id per word
    scancel $jobs 2>/dev/null || true
    while ((SECONDS < deadline)); do
        [[ -z "$(squeue --noheader --states=PENDING,RUNNING,COMPLETING --format=%i 2>/dev/null)" ]] && return 0
        sleep 1
    done
    log "jobs still listed after ${STOP_TIMEOUT_S} s: $(squeue --noheader --format=%i 2>/dev/null | tr '\n' ' ')"
}

stop_daemon() {
    local name="$1" pid deadline=$((SECONDS + STOP_TIMEOUT_S))
    if ! pid="$(pid_of "$STATE_DIR/$name.pid" "$name")"; then
        rm -f "$STATE_DIR/$name.pid"
        return 0
    fi

    kill -TERM "$pid"
    while ((SECONDS < deadline)) && [[ -e "/proc/$pid" ]]; do
        sleep 0.2
    done
    if [[ -e "/proc/$pid" ]]; then
        log "$name (pid $pid) did not stop within ${STOP_TIMEOUT_S} s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

unlink_default_conf() {
    if [[ -L "$DEFAULT_CONF" ]] && [[ "$(readlink "$DEFAULT_CONF")" == "$STATE_DIR/slurm.conf" ]]; then
        rm -f "$DEFAULT_CONF"
        log "removed the link $DEFAULT_CONF"
    fi
}

main() {
    if [[ ! -d "$STATE_DIR" ]]; then
        log "no cluster state in $STATE_DIR; nothing to stop"
        return 0
    fi
    STATE_DIR="$(realpath "$STATE_DIR")"

    cancel_jobs
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    unlink_default_conf

    if ((PURGE)); then
        rm -rf -- "$STATE_DIR"
        log "deleted $STATE_DIR"
    fi
}

main
