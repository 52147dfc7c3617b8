"""Installing system packages for the local stack (Debian/Ubuntu apt; hints elsewhere)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from streamrec.stack.errors import InstallError, NotInstalledError

log = logging.getLogger(__name__)


def find_program(program: str) -> str | None:
    """``program`` on PATH, or in the sbin dirs a non-login PATH often lacks."""
    found = shutil.which(program)
    if found:
        return found
    for directory in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        candidate = Path(directory) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_apt_package(
    service: str, program: str, package: str, *, elsewhere: str, packaged_units: tuple[str, ...]
) -> str:
    """Path of ``program``; installs ``package`` with apt-get first if it is missing.

    ``elsewhere`` is the hint for machines without apt (e.g. ``brew install redis``).
    ``packaged_units`` are the init/systemd services the Debian package starts on install;
    they are stopped again because streamrec runs its own instance on the same port.
    """
    found = find_program(program)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise NotInstalledError(service, program, f"install it first, e.g. `{elsewhere}`")
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]  # never prompt: `up` may run unattended
    else:
        raise NotInstalledError(service, program, f"run `apt-get install -y {package}` as root")

    # Several installers may run at once (test processes, another `stack up`): apt-get waits
    # for dpkg's lock instead of failing at once on "Could not get lock".
    wait = ["-o", "DPkg::Lock::Timeout=600"]
    install = [*prefix, "apt-get", *wait, "install", "-y", "--no-install-recommends", package]
    log.info("%s: installing %s with apt-get (one-time)...", service, package)
    result = _run(install)
    if result.returncode != 0:
        # Usually stale package lists on a fresh machine (404 on an old .deb version).
        log.info("%s: apt-get install failed; running apt-get update and retrying", service)
        update = _run([*prefix, "apt-get", *wait, "update"])
        if update.returncode != 0:
            raise InstallError(service, update.args, update.stdout)
        result = _run(install)
        if result.returncode != 0:
            raise InstallError(service, install, result.stdout)
    _stop_packaged_units(prefix, packaged_units)
    found = find_program(program)
    if not found:
        raise NotInstalledError(service, program, f"apt-get installed {package} but not {program}")
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )


def _stop_packaged_units(prefix: list[str], units: tuple[str, ...]) -> None:
    """Stop (and on systemd, disable) the daemons the package started, which would otherwise
    hold our port (redis-server on 6379, prometheus on 9090) now and after every reboot."""
    systemd = Path("/run/systemd/system").is_dir()
    for unit in units:
        if systemd:
            cmd = [*prefix, "systemctl", "disable", "--now", unit]
        elif shutil.which("service"):
            cmd = [*prefix, "service", unit, "stop"]
        else:
            continue
        result = _run(cmd)  # failing is fine: the unit may not exist or not be running
        log.debug("%s -> %d: %s", " ".join(cmd), result.returncode, result.stdout.strip())
