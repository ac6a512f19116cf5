#!/usr/bin/env bash
# Set up a development tree of observe-rt on a Debian 12 machine, as root.
# Idempotent: on a machine that is already set up it only checks and finishes in seconds.
#
#   deploy/setup.sh            Debian packages + .venv + editable install with dev and fuzz extras
#   OBSERVE_RT_SKIP_APT=1 ...  skip the Debian packages (e.g. an image that has them already)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
# Debian's interpreter: python3-bpfcc is built for it, and its venv binary starts in ~13 ms.
python_bin="/usr/bin/python3"

# Debian packages the runtime and its test suite use.
#   python3-bpfcc bpfcc-tools linux-headers-amd64  eBPF probes (bcc) and headers for it to compile against
#   containernetworking-plugins                    CNI plugins in /usr/lib/cni
#   docker-registry skopeo busybox-static          a real local OCI registry and test images
#   runc crun containerd                           peers for behaviour comparison and benchmarks
#   prometheus tmux                                scrape tests and live-view tests
#   iproute2 libseccomp2 kmod python3-venv         netns tooling, seccomp (ctypes), venv support
#   gcc libc6-dev                                  static C workloads (probe tests, make bench)
packages=(
    python3-bpfcc bpfcc-tools linux-headers-amd64
    containernetworking-plugins
    docker-registry skopeo busybox-static
    runc crun containerd
    prometheus tmux
    iproute2 libseccomp2 kmod python3-venv python3-dev
    gcc libc6-dev
)

log() { printf 'setup: %s\n' "$*"; }

install_packages() {
    [[ "${OBSERVE_RT_SKIP_APT:-0}" == 1 ]] && { log "skipping Debian packages (OBSERVE_RT_SKIP_APT=1)"; return; }
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "Debian packages present"
        return
    fi
    [[ $EUID -eq 0 ]] || { echo "setup: installing ${missing[*]} needs root" >&2; exit 1; }
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts these services on install; observe-rt's tests start their own instances.
    for svc in docker-registry prometheus containerd; do
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
}

# bcc compiles its programs against /lib/modules/$(uname -r)/{build,source}. Kernels built
# elsewhere (Firecracker, cloud images) ship no headers, so point those links at the newest
# Debian linux-headers tree. Tracepoint arguments and BPF helpers are all our programs read, and
# those are stable across versions, so near-enough headers are enough.
link_kernel_headers() {
    local moddir="/lib/modules/$(uname -r)"
    if [[ -e "$moddir/build/include/linux/kconfig.h" || -e "$moddir/source/include/linux/kconfig.h" ]]; then
        log "kernel headers for $(uname -r) present"
        return
    fi
    local arch common
    arch="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1 || true)"
    common="${arch%-amd64}-common"
    if [[ -z "$arch" || ! -d "$common" ]]; then
        log "WARNING: no Debian linux-headers tree found; eBPF probes will be off"
        return
    fi
    mkdir -p "$moddir"
    ln -sfn "$arch" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
    log "no headers for kernel $(uname -r): linked $moddir/build -> $arch and source -> $common"
}

mount_tracefs() {
    if [[ ! -e /sys/kernel/tracing/events ]]; then
        mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null && log "mounted tracefs at /sys/kernel/tracing" || true
    fi
}

make_venv() {
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating $venv"
        "$python_bin" -m venv "$venv"
    fi
    # Expose only bcc from Debian's site-packages: a directory holding a symlink to it, added
    # to the venv's path by a .pth file (the rest of dist-packages stays invisible).
    local site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$venv/system-packages"
    if [[ -d /usr/lib/python3/dist-packages/bcc ]]; then
        ln -sfn /usr/lib/python3/dist-packages/bcc "$venv/system-packages/bcc"
    fi
    echo "$venv/system-packages" > "$site/observe_rt_system_packages.pth"

    local stamp="$venv/.installed-$(sha1sum "$repo/pyproject.toml" | cut -c1-12)"
    if [[ ! -e "$stamp" ]]; then
        log "installing observe-rt (editable) with dev and fuzz extras"
        "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
        # compat mode: a plain path in a .pth file, no import hook (~20 ms off every start)
        "$venv/bin/python" -m pip install -q -e "$repo[dev,fuzz]" --config-settings editable_mode=compat
        rm -f "$venv"/.installed-*
        touch "$stamp"
    else
        log "python packages up to date"
    fi
    # Byte-compile now: with PYTHONDONTWRITEBYTECODE set (as in some shells and CI), every
    # observe-rt command would otherwise recompile its modules, ~60 ms per start.
    "$venv/bin/python" -m compileall -q "$repo/observe_rt" >/dev/null
}

install_packages
link_kernel_headers
mount_tracefs
make_venv
log "done: $venv/bin/observe-rt"
