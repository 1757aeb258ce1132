#!/usr/bin/env bash
# Install (or remove) one crontab line that runs `quantbot-bus sync` every N minutes, for hosts
# that keep the catalog fresh with cron instead of the daemon. Edits the crontab of the user who
# runs it, through `crontab -l` and `crontab -` only. See docs/operations.md ("Cron instead of the
# daemon") and --help.
set -euo pipefail

readonly TAG="quantbot-bus-catalog-sync"
readonly LOG_NAME="catalog-sync.log"
PROG=$(basename "$0")
readonly PROG
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly REPO_ROOT

usage() {
    cat <<EOF
Usage: $PROG [--interval N] [--base-dir DIR] [--config FILE] [--log-dir DIR] [--dry-run]
       $PROG --uninstall [--dry-run]

Install a line in your crontab that runs \`quantbot-bus sync\` every N minutes (one reconcile
of the artifacts root with the catalog, then a publication for readers). Installing again
replaces the line; --uninstall removes it. Other crontab lines are never touched. The line is
tagged with the comment "# $TAG".

Options:
  --interval N     minutes between syncs (default 5): 1 to 59, or a multiple of 60 up to
                   1440 (60, 120, ..., 1380, 1440 = once a day at midnight)
  --base-dir DIR   the directory the job cds into, where its config and data live; relative
                   paths of the bus resolve against it (default: $REPO_ROOT)
  --config FILE    config file, passed as \`quantbot-bus sync --config FILE\` (default: none,
                   so quantbot-bus reads DIR/quantbot-bus.toml if it exists)
  --log-dir DIR    where the job appends its output, to $LOG_NAME (default: DIR/logs;
                   created on install)
  --dry-run        print the crontab line that would be installed (or, with --uninstall, the
                   line that would be removed) and change nothing
  --uninstall      remove the line (nothing installed: says so, exit 0)
  -h, --help       this text

The job runs the quantbot-bus found now: DIR/.venv/bin/quantbot-bus, else the one on PATH.
Cron does not see QUANTBOT_BUS_* variables of this shell: put settings in a config file.

Refuses (exit 1) while a quantbot-bus daemon runs on the same state directory: the daemon
keeps the catalog fresh already, and a sync beside it would only exit 10 (busy).
Exit codes: 0 done, 1 refused or failed, 2 bad option or value.
EOF
}

die() { # die CODE MESSAGE...
    local code=$1
    shift
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit "$code"
}

usage_error() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    printf "Try '%s --help'.\n" "$PROG" >&2
    exit 2
}

warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
note() { printf '%s: note: %s\n' "$PROG" "$*" >&2; }

# --- options ------------------------------------------------------------------------------------

interval=5
base_dir=""
config=""
log_dir=""
dry_run=0
uninstall=0

set_option() { # set_option FLAG VALUE
    [[ -n $2 ]] || usage_error "$1 needs a non-empty value"
    [[ $2 != *$'\n'* ]] || usage_error "$1: a newline cannot go into a crontab line"
    case $1 in
        --interval) interval=$2 ;;
        --base-dir) base_dir=$2 ;;
        --config) config=$2 ;;
        --log-dir) log_dir=$2 ;;
    esac
}

while (($#)); do
    arg=$1
    shift
    case $arg in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run) dry_run=1 ;;
        --uninstall) uninstall=1 ;;
        --interval | --base-dir | --config | --log-dir)
            (($#)) || usage_error "$arg needs a value"
            set_option "$arg" "$1"
            shift
            ;;
        --interval=* | --base-dir=* | --config=* | --log-dir=*)
            set_option "${arg%%=*}" "${arg#*=}"
            ;;
        -*) usage_error "unknown option: $arg" ;;
        *) usage_error "unexpected argument: $arg (options only)" ;;
    esac
done

# The crontab schedule for an interval in minutes; exit 2 for an interval cron cannot express
# as a plain step.
schedule_for() {
    local raw=$1 n
    if [[ $raw =~ ^[0-9]{1,7}$ ]]; then
        n=$((10#$raw))
        if ((n == 1)); then
            echo "* * * * *"
            return
        elif ((n >= 2 && n <= 59)); then
            ((60 % n == 0)) || note "cron counts minutes from the full hour: */$n runs at minute 0, $n, $((2 * n)), ... of every hour, so the last gap of each hour is $((60 % n)) minutes"
            echo "*/$n * * * *"
            return
        elif ((n == 1440)); then
            echo "0 0 * * *"
            return
        elif ((n >= 60 && n < 1440 && n % 60 == 0)); then
            ((24 % (n / 60) == 0)) || note "cron counts hours from midnight: 0 */$((n / 60)) runs at 00:00, $((n / 60)):00, ... so the last gap of each day is $((24 % (n / 60))) hours"
            echo "0 */$((n / 60)) * * *"
            return
        fi
    fi
    usage_error "--interval must be a whole number of minutes: 1 to 59, or a multiple of 60 up to 1440 (60, 120, ..., 1380, 1440); got '$raw'"
}

absolute() { realpath -ms -- "$1"; }

# A word for sh: as is when it is plain, else single-quoted.
shell_word() {
    if [[ $1 =~ ^[A-Za-z0-9_./@+=,:-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

# --- crontab --------------------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/qb-cron.XXXXXX")
trap 'rm -rf "$work"' EXIT

me=$(id -un)

# crontab_lines: the user's crontab, one array element a line (none when there is no crontab).
read_crontab() {
    command -v crontab >/dev/null 2>&1 || die 1 "crontab not found: install cron (Debian: apt-get install cron)"
    if ! crontab -l >"$work/current" 2>"$work/err"; then
        grep -q '^no crontab for ' "$work/err" || die 1 "crontab -l failed: $(cat "$work/err")"
        : >"$work/current"
    fi
    mapfile -t crontab_lines <"$work/current"
}

is_ours() { [[ $1 =~ (^|[[:space:]])#[[:space:]]*${TAG}[[:space:]]*$ ]]; }

write_crontab() { # write_crontab LINE...
    if (($#)); then
        printf '%s\n' "$@" >"$work/new"
    else
        : >"$work/new"
    fi
    crontab - <"$work/new" 2>"$work/err" || die 1 "crontab - failed: $(cat "$work/err")"
}

# --- uninstall ------------------------------------------------------------------------------------

if ((uninstall)); then
    read_crontab
    keep=()
    removed=()
    for line in "${crontab_lines[@]}"; do
        if is_ours "$line"; then removed+=("$line"); else keep+=("$line"); fi
    done
    if ((${#removed[@]} == 0)); then
        echo "nothing to remove: no '# $TAG' line in the crontab of $me"
        exit 0
    fi
    if ((dry_run)); then
        printf '%s\n' "${removed[@]}"
        exit 0
    fi
    write_crontab "${keep[@]}"
    echo "removed from the crontab of $me:"
    printf '%s\n' "${removed[@]}"
    exit 0
fi

# --- the line -------------------------------------------------------------------------------------

schedule=$(schedule_for "$interval")

base_dir=$(absolute "${base_dir:-$REPO_ROOT}")
[[ -d $base_dir ]] || usage_error "--base-dir $base_dir: no such directory"
if [[ -n $config ]]; then
    config=$(absolute "$config")
    [[ -f $config ]] || usage_error "--config $config: no such file"
fi
log_dir=$(absolute "${log_dir:-$base_dir/logs}")

exe="$base_dir/.venv/bin/quantbot-bus"
if [[ ! -f $exe || ! -x $exe ]]; then
    exe=$(command -v quantbot-bus 2>/dev/null || true)
    [[ -n $exe && -x $exe ]] || die 1 "no quantbot-bus executable: not at $base_dir/.venv/bin/quantbot-bus and not on PATH (create the venv with \`make\` in the checkout, or pip install quantbot-bus, then run this again)"
    exe=$(absolute "$exe")
fi

command_part="cd $(shell_word "$base_dir") && $(shell_word "$exe") sync"
[[ -z $config ]] || command_part+=" --config $(shell_word "$config")"
command_part+=" >> $(shell_word "$log_dir/$LOG_NAME") 2>&1"
# cron turns an unescaped % into a newline
cron_line="$schedule ${command_part//%/\\%} # $TAG"

# --- the state directory, and a daemon on it ------------------------------------------------------
#
# The job's state dir is what `quantbot-bus sync` resolves in the job: cwd = base dir, the config
# file (--config, else base dir/quantbot-bus.toml), no QUANTBOT_BUS_* variables (cron does not
# pass this shell's environment). quantbot-bus has no command that prints its resolved config, so
# the Python interpreter of the executable asks quantbot_bus.config.load_config, the function the
# CLI uses. When that interpreter cannot run, fall back to $QUANTBOT_BUS_STATE_DIR and base
# dir/state (a state_dir set in a config file is then not seen).

# The interpreter on the executable's first line (pip writes "#!/bin/sh" plus "'''exec' "PYTHON"
# ..." for long paths); nothing when it is no Python script.
bus_python() {
    local first="" second="" words=()
    { IFS= read -r first && IFS= read -r second; } <"$1" 2>/dev/null || true
    if [[ $first == '#!/bin/sh'* && $second =~ ^\'\'\'exec\'\ \"([^\"]+)\" ]]; then
        printf '%s\n' "${BASH_REMATCH[1]}"
    elif [[ $first == '#!'* ]]; then
        read -ra words <<<"${first#\#!}"
        ((${#words[@]})) && [[ ${words[-1]##*/} == python* ]] && printf '%s\n' "${words[@]}"
    fi
    return 0
}

readonly RESOLVE_PY='
import os, sys
from pathlib import Path
from quantbot_bus.config import ENV_PREFIX, load_config
from quantbot_bus.errors import ConfigError
config, base = sys.argv[1] or None, Path(sys.argv[2])
cron_env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
for name, env in (("cron", cron_env), ("shell", os.environ)):
    try:
        print(name, load_config(config, env=env, cwd=base).state_dir, sep="\t")
    except ConfigError as exc:
        print(name + "-error", exc, sep="\t")
'

cron_state=""
shell_state=""
mapfile -t py < <(bus_python "$exe")
fallback_why=""
if ((${#py[@]} == 0)); then
    fallback_why="$exe is not a Python script"
elif [[ ${py[0]} == /* && ! -x ${py[0]} ]]; then
    fallback_why="its interpreter ${py[0]} cannot be run by $me"
    warn "$exe cannot run as $me (its interpreter ${py[0]} is not executable for $me): the installed job will fail until it can"
elif resolved=$("${py[@]}" -I -c "$RESOLVE_PY" "$config" "$base_dir" 2>"$work/err"); then
    while IFS=$'\t' read -r key value; do
        case $key in
            cron) cron_state=$value ;;
            shell) shell_state=$value ;;
            cron-error) die 2 "the config the job would load (${config:-$base_dir/quantbot-bus.toml}) is invalid, so every sync would fail: $value" ;;
            shell-error) warn "ignoring this shell's QUANTBOT_BUS_* settings: $value" ;;
        esac
    done <<<"$resolved"
    [[ -n $cron_state ]] || fallback_why="it printed no state dir"
else
    fallback_why="$(tail -n 1 "$work/err")"
fi
if [[ -n $fallback_why ]]; then
    cron_state="$base_dir/state"
    if [[ -n ${QUANTBOT_BUS_STATE_DIR:-} ]]; then
        shell_state=$(cd "$base_dir" && absolute "$QUANTBOT_BUS_STATE_DIR")
    fi
    if [[ -n $config || -f $base_dir/quantbot-bus.toml ]]; then
        warn "could not read the config through quantbot-bus ($fallback_why); assuming the state dir $cron_state: a daemon on a state_dir set in the config file is not detected"
    fi
fi

shell_vars=$(compgen -e | grep '^QUANTBOT_BUS_' | paste -sd, - || true)
if [[ -n $shell_vars ]]; then
    if [[ -n $config ]]; then
        job_config="--config $config"
    elif [[ -f $base_dir/quantbot-bus.toml ]]; then
        job_config="$base_dir/quantbot-bus.toml"
    else
        job_config="no config file"
    fi
    warn "the cron job does not see $shell_vars from this shell: it uses $job_config and the defaults (state dir $cron_state). Put the settings in a config file and pass --config"
fi

# A daemon holds an flock on STATE/daemon.lock and wrote "<pid> daemon" into it (statelock.py).
check_no_daemon() { # check_no_daemon STATE_DIR
    local lock="$1/daemon.lock" rc=0 pid="" role=""
    [[ -e $lock ]] || return 0
    if ! command -v flock >/dev/null 2>&1; then
        warn "flock not found (util-linux): cannot tell whether a daemon holds $lock"
        return 0
    fi
    flock -n -E 75 "$lock" true 2>"$work/err" || rc=$?
    case $rc in
        0) return 0 ;;
        75) ;;
        *)
            warn "cannot tell whether a daemon holds $lock: $(cat "$work/err")"
            return 0
            ;;
    esac
    read -r pid role _ 2>/dev/null <"$lock" || true
    [[ ${role:-daemon} == daemon ]] || return 0 # a sync or rebuild: the job would do the same
    cat >&2 <<EOF
$PROG: a quantbot-bus daemon (pid ${pid:-unknown}) is running on the state dir $1.
It keeps the catalog fresh already (new runs appear within a second), so no cron job is needed:
beside it every \`quantbot-bus sync\` would only exit 10 (busy). Nothing was changed.
To use cron instead, stop the daemon first (systemctl stop quantbot-bus, or
systemctl --user stop quantbot-bus, or Ctrl-C / kill ${pid:-PID} for one started by hand;
\`quantbot-bus systemd uninstall\` keeps it from coming back), then run this again.
EOF
    exit 1
}

check_no_daemon "$cron_state"
[[ -z $shell_state || $shell_state == "$cron_state" ]] || check_no_daemon "$shell_state"

# --- install --------------------------------------------------------------------------------------

if ((dry_run)); then
    printf '%s\n' "$cron_line"
    exit 0
fi

mkdir -p -- "$log_dir" 2>"$work/err" || die 1 "cannot create the log dir: $(cat "$work/err")"
[[ -w $log_dir ]] || die 1 "the log dir $log_dir is not writable by $me (the job appends to $LOG_NAME there)"

read_crontab
new=()
replaced=0
for line in "${crontab_lines[@]}"; do
    if is_ours "$line"; then replaced=1; else new+=("$line"); fi
done
new+=("$cron_line")
write_crontab "${new[@]}"

if ((replaced)); then verb="replaced the line in"; else verb="installed in"; fi
printf '%s the crontab of %s:\n%s\n' "$verb" "$me" "$cron_line"
printf 'output goes to %s\n' "$log_dir/$LOG_NAME"

running=0
for pidfile in /run/crond.pid /var/run/crond.pid; do
    if [[ -r $pidfile ]] && read -r cron_pid <"$pidfile" && [[ -n $cron_pid && -d /proc/$cron_pid ]]; then
        running=1
    fi
done
((running)) || note "no running cron daemon found (/run/crond.pid): the line runs only while cron runs (Debian: apt-get install cron; systemctl enable --now cron)"
