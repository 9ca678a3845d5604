#!/usr/bin/env bash
# Start or stop a one-node SLURM cluster on localhost, by hand, as root, without systemd:
# munged + slurmctld + slurmd with a fake GPU. It exists to test the SLURM profile
# (tests/test_slurm.py, CI); it is not a recipe for a production cluster.
#
#   scripts/slurm-cluster.sh start    # idempotent: reuses a cluster it started before
#   scripts/slurm-cluster.sh stop
#   scripts/slurm-cluster.sh status
#
# Facts this works around:
# - The executor plugin's job step runs `srun` with SLURM_CONF removed from the
#   environment, so the configuration must live at the default /etc/slurm/slurm.conf.
#   We never overwrite a slurm.conf we did not write (marker line below).
# - No accounting storage: sacct cannot answer, so runs must use
#   `--slurm-status-command squeue`; MinJobAge is kept long so squeue still lists
#   finished jobs when the plugin asks (it falls back to sacct below 3x its first poll).
# - A fake GPU: Gres=gpu:1 backed by /dev/null lets `--gres=gpu:1` jobs schedule.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by exsitu-sbi scripts/slurm-cluster.sh"
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm

die() { echo "slurm-cluster.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it starts munged, slurmctld and slurmd)"
for tool in munged slurmctld slurmd sinfo sbatch squeue; do
  command -v "$tool" >/dev/null || die "'$tool' not found: install slurm-wlm and munge (scripts/install-system-deps.sh)"
done

write_conf() {
  if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's configuration"
  fi
  local host node
  host=$(hostname -s)
  # slurmd -C reports this machine's real CPUs/memory; the node must not claim more.
  node=$(slurmd -C | head -n1)
  mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGDIR" "$RUNDIR"
  cat >"$CONF" <<CONF
$MARKER
ClusterName=exsitu-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=600
MpiDefault=none
$node Gres=gpu:1 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  echo "NodeName=$host Name=gpu File=/dev/null" >"$CONF_DIR/gres.conf"
  # The node line came from slurmd -C, which also prints an UpTime line we dropped.
  sed -i '/^UpTime=/d' "$CONF"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c munged
  else
    munged --force
  fi
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

running() { pgrep -x "$1" >/dev/null; }

start() {
  write_conf
  start_munge
  running slurmctld || slurmctld
  running slurmd || slurmd
  for _ in $(seq 120); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    case $state in
      idle*|mix*|alloc*) echo "slurm-cluster.sh: node $(hostname -s) is $state"; return ;;
      drain*|down*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  tail -n 20 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
  die "the node did not become idle within 60 s (logs above)"
}

stop() {
  for daemon in slurmd slurmctld; do
    if [[ -s $RUNDIR/$daemon.pid ]]; then
      kill "$(cat "$RUNDIR/$daemon.pid")" 2>/dev/null || true
    fi
  done
}

status() {
  sinfo -N -o "%N %t %c %m %G"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
