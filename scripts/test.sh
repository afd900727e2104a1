#!/usr/bin/env bash
# The project's test command: makes sure the real parts the tests use (redis-server, OpenSSH sshd, rsync, iproute2,
# chromium and its driver for the dashboard's browser test, gcc and libssl-dev for the compiled batch path)
# are installed, installs the package with its dev extras, checks lint, formatting and types, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in redis-server:redis-server sshd:openssh-server ssh-keygen:openssh-client rsync:rsync ip:iproute2 iperf3:iperf3 \
            nft:nftables tinyproxy:tinyproxy strace:strace getfacl:acl getfattr:attr fusermount3:fuse3 mkfs.btrfs:btrfs-progs \
            chromium:chromium chromedriver:chromium-driver; do
    bin=${pair%%:*}; pkg=${pair##*:}
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
command -v gcc >/dev/null 2>&1 || need+=(gcc)  # the optional compiled batch path (fasp/datapath/_fastpath.c) ...
[ -f /usr/include/openssl/evp.h ] || need+=(libssl-dev)  # ... links OpenSSL; its tests fail if it was not built
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing system packages: ${need[*]} (install them as root: apt-get install ${need[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd 2>/dev/null || true

python3 -m pip install -q -e '.[dev]'
# The tests start hundreds of engine processes from this checkout; where PYTHONDONTWRITEBYTECODE is set, each
# compiled every module again (tests/engine/test_option_effects.py: 27.7 s, 22.4 s compiled).
python3 -m compileall -q fasp faspmanager bench >/dev/null
# The habits CI holds every change to (configuration in pyproject.toml): lint, formatting, types.
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
# Two workers per two cores: most tests wait (on round trips, timeouts, other processes), so the suite runs in
# about half the time (1,104 -> 606 s on this 2-core machine). A file's tests stay on one worker (loadfile): its
# module-scoped servers start once. `bash scripts/test.sh -n 0 ...` runs serially.
exec python3 -m pytest -n auto --dist loadfile "$@"
