#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine, for the tests (make test-slurm) and for trying sweeps.
#
#   scripts/slurm_local.sh start DIR    write every config, state, socket, pid and log file under DIR, start
#                                       munged, slurmctld and slurmd, wait until the node is idle;
#                                       then: export SLURM_CONF=DIR/etc/slurm.conf
#   scripts/slurm_local.sh status DIR   the daemons' pids and sinfo
#   scripts/slurm_local.sh stop DIR     cancel the cluster's jobs, stop the daemons it started (by their pids)
#
# Run as root (the daemons run as root, munged as the munge user). Missing packages are installed with apt-get
# when root, else one line names them. No accounting by default: lossbench's launcher reads job states from
# squeue and scontrol (submitit's own waiting needs sacct: without it a job cancelled before writing its result
# is never seen as finished). SLURM_LOCAL_ACCOUNTING=1 adds MariaDB and slurmdbd, for sacct.
# Needs no cgroups and no systemd: linuxproc process tracking, no task plugin.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
etc=$dir/etc run=$dir/run log=$dir/log
accounting=${SLURM_LOCAL_ACCOUNTING:-0}
export SLURM_CONF=$etc/slurm.conf

die() { echo "error: $*" >&2; exit 2; }

# daemon name -> its pid file, in stop order
daemons=(slurmd slurmctld slurmdbd mariadb munged)
pidfile() { echo "$run/$1.pid"; }
alive() { local f; f=$(pidfile "$1"); [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

install_packages() {
    local needed=(slurm-wlm munge) missing=()
    [[ $accounting == 1 ]] && needed+=(slurmdbd mariadb-server)
    for pkg in "${needed[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing packages ${missing[*]}: install them (as root: apt-get install -y ${missing[*]}) and rerun"
    fi
    echo "installing ${missing[*]} ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >"$dir/apt.log" 2>&1 ||
        { apt-get update -q >>"$dir/apt.log" 2>&1 && apt-get install -y -q "${missing[@]}" >>"$dir/apt.log" 2>&1; } ||
        die "apt-get install ${missing[*]} failed (log: $dir/apt.log)"
}

free_port() {  # the first port from $1 on that nothing listens on
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.2 s
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within the time allowed (logs: $log)"
        sleep 0.2
    done
}

start_munge() {
    mkdir -p "$dir/munge"
    chown munge:munge "$dir/munge"
    chmod 700 "$dir/munge"
    if [[ ! -s $dir/munge/munge.key ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$dir/munge/munge.key"
        chmod 400 "$dir/munge/munge.key"
    fi
    touch "$(pidfile munged)"
    chown munge:munge "$(pidfile munged)"
    setpriv --reuid=munge --regid=munge --init-groups munged --force \
        --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$(pidfile munged)" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    wait_for 10 munged test -S "$dir/munge/munge.socket"
}

start_accounting() {
    local db=$dir/mariadb
    if [[ ! -d $db/mysql ]]; then
        mariadb-install-db --datadir="$db" --user=root --auth-root-authentication-method=normal \
            >"$log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (log: $log/mariadb-install.log)"
    fi
    mariadbd --no-defaults --datadir="$db" --user=root --bind-address=127.0.0.1 --port="$db_port" \
        --socket="$run/mariadb.sock" --pid-file="$(pidfile mariadb)" --log-error="$log/mariadb.log" \
        --skip-name-resolve >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --no-defaults --socket="$run/mariadb.sock" -uroot -e "select 1"
    cat >"$etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$etc/slurmdbd.conf"
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -i show cluster
}

write_slurm_conf() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
    cat >"$etc/slurm.conf" <<EOF
ClusterName=lossbench
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
# no cgroups on this kind of machine
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# without a default memory every job takes the whole node's memory and jobs run one at a time
DefMemPerCPU=1024
# a requeued or cancelled job is killed 2 s after its SIGTERM (default 30 s)
KillWait=2
SchedulerParameters=sched_min_interval=100000
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ $accounting == 1 ]]; then
        cat >>"$etc/slurm.conf" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# slurm 22.05 reads the munge socket for the slurmdbd connection from here, not from AuthInfo
AccountingStoragePass=$dir/munge/munge.socket
JobAcctGatherType=jobacct_gather/none
EOF
    else
        echo "AccountingStorageType=accounting_storage/none" >>"$etc/slurm.conf"
        echo "JobAcctGatherType=jobacct_gather/none" >>"$etc/slurm.conf"
    fi
}

node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; }

start() {
    for d in "${daemons[@]}"; do alive "$d" && die "$d of $dir is already running (pid $(cat "$(pidfile "$d")")); stop it first"; done
    [[ $(id -u) -eq 0 ]] || die "the local cluster's daemons run as root: run this script as root"
    local t0=$SECONDS
    install_packages
    mkdir -p "$etc" "$run" "$log" "$dir/state" "$dir/spool"
    # munged must reach its socket folder: every parent of DIR traversable
    local p=$dir
    while [[ $p != / ]]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
    ctld_port=$(free_port 6817)
    slurmd_port=$(free_port $((ctld_port + 1)))
    dbd_port=$(free_port $((slurmd_port + 1)))
    db_port=$(free_port 3307)
    start_munge
    write_slurm_conf
    [[ $accounting == 1 ]] && start_accounting
    slurmctld -f "$SLURM_CONF"
    wait_for 30 slurmctld scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for 60 "the node (sinfo idle)" node_idle
    echo "Slurm cluster up in $((SECONDS - t0)) s (accounting: $([[ $accounting == 1 ]] && echo on || echo off))"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
    if alive slurmctld; then  # jobs first: their processes outlive slurmd
        scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.5; done
    fi
    for d in "${daemons[@]}"; do
        alive "$d" || continue
        local pid deadline=$((SECONDS + 10))
        pid=$(cat "$(pidfile "$d")")
        kill "$pid"
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped $d (pid $pid)"
    done
    rm -f "$run"/*.pid
}

status() {
    for d in "${daemons[@]}"; do
        if alive "$d"; then echo "$d: running (pid $(cat "$(pidfile "$d")"))"; else echo "$d: not running"; fi
    done
    alive slurmctld && sinfo
    return 0
}

case $action in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
