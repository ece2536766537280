#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for tests and CI.
#
# Usage: .ci/slurm/start-cluster.sh [STATE_DIR]
#   STATE_DIR  folder for the configuration, state, logs and pid files
#              (default: $IMAGEBENCH_SLURM_DIR, else /tmp/imagebench-slurm)
#
# Environment:
#   IMAGEBENCH_SLURMCTLD_PORT    TCP port of slurmctld (default 6817)
#   IMAGEBENCH_SLURMD_PORT       TCP port of slurmd (default 6818)
#   IMAGEBENCH_SLURM_STANDIN_GPU 1 (default) declares one GPU backed by
#                                /dev/null, so that jobs requesting --gpus=1
#                                are scheduled and get CUDA_VISIBLE_DEVICES=0
#                                without any GPU behind it; 0 declares none,
#                                and sbatch then rejects every GPU request
#
# Needs root, because slurmd launches jobs as the submitting user and munged
# must own its key. Installs slurm-wlm and munge with apt-get when they are
# missing. Every daemon listens on 127.0.0.1 or a unix socket only.
#
# The configuration is STATE_DIR/slurm.conf, and /etc/slurm/slurm.conf becomes
# a symbolic link to it until stop-cluster.sh removes the link. The link is
# needed because snakemake-executor-plugin-slurm-jobstep 0.6.1 removes
# SLURM_CONF from the environment of the srun that it starts inside each job,
# so that srun finds only a configuration at SLURM's default path. A machine
# with a /etc/slurm/slurm.conf of its own is left alone (exit status 2).
# On success the script prints `export SLURM_CONF=STATE_DIR/slurm.conf`, also
# written to STATE_DIR/env.sh, which points the SLURM commands (sbatch,
# squeue, scontrol) at this cluster without relying on the link. Running it
# again while the cluster is up only prints that line.
#
# Exit status: 0 when the cluster accepts jobs, 2 when SLURM cannot be
# installed or started here (not root, no apt-get, a port in use, another
# SLURM configuration in /etc/slurm), 1 on other failures.
set -euo pipefail

STATE_DIR="${1:-${IMAGEBENCH_SLURM_DIR:-/tmp/imagebench-slurm}}"
CTLD_PORT="${IMAGEBENCH_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${IMAGEBENCH_SLURMD_PORT:-6818}"
STANDIN_GPU="${IMAGEBENCH_SLURM_STANDIN_GPU:-1}"
# The plugin's squeue status check detects a finished job only while
# slurmctld still lists it, which is for MinJobAge seconds. Keep that well
# above three status-check intervals.
MIN_JOB_AGE=300
STARTUP_TIMEOUT_S=60
DEFAULT_CONF=/etc/slurm/slurm.conf
CONF_HEADER="# Written by .ci/slurm/start-cluster.sh: a one-node test cluster on 127.0.0.1."

log() { echo "start-cluster: $*" >&2; }
fail_unsupported() { log "$*"; exit 2; }

is_running() {
    local pid_file="$1" binary="$2" pid
    [[ -s "$pid_file" ]] || return 1
    pid="$(<"$pid_file")"
    # Compare the program name too, so that a recycled pid is not taken for ours.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$binary" ]]
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || fail_unsupported "slurmctld, slurmd or munged is missing and apt-get is not available to install slurm-wlm and munge"

    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >&2; then
        # A fresh image may have no package lists yet.
        apt-get update -q >&2 || fail_unsupported "apt-get update failed; install slurm-wlm and munge by hand"
        apt-get install -y -q --no-install-recommends slurm-wlm munge >&2 \
            || fail_unsupported "apt-get install slurm-wlm munge failed"
    fi
}

check_port_free() {
    local port="$1" name="$2"
    # bash's /dev/tcp connects only when something listens on the port.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail_unsupported "port $port for $name is in use on 127.0.0.1; set IMAGEBENCH_${name^^}_PORT to a free port"
    fi
}

write_munge_key() {
    if [[ ! -s "$STATE_DIR/munge.key" ]]; then
        # A key of this cluster's own, so that no other munged's credentials are accepted.
        head -c 1024 /dev/urandom >"$STATE_DIR/munge.key"
    fi
    chmod 0400 "$STATE_DIR/munge.key"
}

write_slurm_conf() {
    local node_line node_name
    # slurmd -C prints the CPUs, sockets and memory that slurmd will detect;
    # a node configured with more than that is drained as invalid.
    node_line="$(slurmd -C | head -n 1)"
    node_name="$(hostname -s)"
    node_line="${node_line/NodeName=* CPUs=/NodeName=$node_name NodeAddr=127.0.0.1 NodeHostname=$node_name CPUs=}"
    local gres_types="" node_gres=""
    rm -f "$STATE_DIR/gres.conf"
    if [[ "$STANDIN_GPU" == 1 ]]; then
        # A GPU generic resource needs a device file; /dev/null lets SLURM
        # schedule GPU requests on a machine without a GPU.
        gres_types="GresTypes=gpu"
        node_gres=" Gres=gpu:1"
        echo "NodeName=$node_name Name=gpu File=/dev/null" >"$STATE_DIR/gres.conf"
    fi

    cat >"$STATE_DIR/slurm.conf" <<EOF
$CONF_HEADER
ClusterName=imagebench-test
SlurmctldHost=$node_name(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Both flags make slurmctld, slurmd and srun bind to their configured address
# (127.0.0.1) instead of every interface of the machine.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge.socket
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Jobs here need no MPI library and no mail.
MpiDefault=none
MailProg=/bin/true
# No cgroups, no accounting database: sacct does not work on this cluster.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job without --mem takes the whole node's memory and
# jobs run one at a time.
DefMemPerCPU=1000
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
$gres_types
$node_line$node_gres State=UNKNOWN
PartitionName=debug Nodes=$node_name Default=YES MaxTime=INFINITE State=UP
EOF
    echo "export SLURM_CONF=$STATE_DIR/slurm.conf" >"$STATE_DIR/env.sh"
}

link_default_conf() {
    local target
    if [[ -L "$DEFAULT_CONF" ]]; then
        target="$(readlink "$DEFAULT_CONF")"
        [[ "$target" == "$STATE_DIR/slurm.conf" ]] && return 0
        if [[ -f "$target" ]] && [[ "$(head -n 1 "$target")" != "$CONF_HEADER" ]]; then
            fail_unsupported "$DEFAULT_CONF links to $target, a SLURM configuration not written by this script; this machine has a SLURM installation of its own"
        fi
        if [[ -f "$target" ]] && is_running "$(dirname "$target")/slurmctld.pid" slurmctld; then
            fail_unsupported "another test cluster runs in $(dirname "$target"); stop it with .ci/slurm/stop-cluster.sh $(dirname "$target")"
        fi
    elif [[ -e "$DEFAULT_CONF" ]]; then
        fail_unsupported "$DEFAULT_CONF exists; this machine has a SLURM configuration of its own, which this script does not replace"
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -sfn "$STATE_DIR/slurm.conf" "$DEFAULT_CONF"
}

start_munged() {
    is_running "$STATE_DIR/munged.pid" munged && return 0
    munged \
        --socket="$STATE_DIR/munge.socket" \
        --key-file="$STATE_DIR/munge.key" \
        --pid-file="$STATE_DIR/munged.pid" \
        --log-file="$STATE_DIR/munged.log" \
        --seed-file="$STATE_DIR/munged.seed"
}

start_slurm_daemons() {
    is_running "$STATE_DIR/slurmctld.pid" slurmctld || slurmctld -f "$STATE_DIR/slurm.conf"
    is_running "$STATE_DIR/slurmd.pid" slurmd || slurmd -f "$STATE_DIR/slurm.conf"
}

wait_until_ready() {
    local deadline=$((SECONDS + STARTUP_TIMEOUT_S)) state
    while ((SECONDS < deadline)); do
        state="$(sinfo --noheader --format=%t 2>/dev/null | head -n 1 || true)"
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*|inval*)
                # A node that was down when slurmctld last saved its state stays down.
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    log "the cluster did not accept jobs within ${STARTUP_TIMEOUT_S} s (node state: ${state:-no answer}); see $STATE_DIR/slurmctld.log and $STATE_DIR/slurmd.log"
    exit 1
}

main() {
    [[ "$(id -u)" == 0 ]] || fail_unsupported "must run as root: slurmd launches jobs as the submitting user and munged must own its key"

    install_packages
    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool"
    chmod 0755 "$STATE_DIR"
    # Absolute, so that the configuration and the link in /etc/slurm hold from any folder.
    STATE_DIR="$(realpath "$STATE_DIR")"
    export SLURM_CONF="$STATE_DIR/slurm.conf"

    if is_running "$STATE_DIR/munged.pid" munged && is_running "$STATE_DIR/slurmctld.pid" slurmctld \
        && is_running "$STATE_DIR/slurmd.pid" slurmd; then
        log "already running in $STATE_DIR"
        link_default_conf
        wait_until_ready
        cat "$STATE_DIR/env.sh"
        return 0
    fi

    is_running "$STATE_DIR/slurmctld.pid" slurmctld || check_port_free "$CTLD_PORT" slurmctld
    is_running "$STATE_DIR/slurmd.pid" slurmd || check_port_free "$SLURMD_PORT" slurmd
    write_munge_key
    write_slurm_conf
    link_default_conf
    start_munged
    start_slurm_daemons
    wait_until_ready
    log "cluster up in $STATE_DIR (slurmctld on 127.0.0.1:$CTLD_PORT, slurmd on 127.0.0.1:$SLURMD_PORT)"
    cat "$STATE_DIR/env.sh"
}

main
