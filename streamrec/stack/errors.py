"""Errors of the local stack. Each names the service and, where one exists, the log to read."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import StreamrecError


def _shown(path: Path) -> str:
    """A path relative to the cwd when it is inside it (shorter CLI messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class StackError(StreamrecError):
    """A local-stack service could not be installed, started, probed or stopped."""

    exit_code = 3

    def __init__(self, message: str, *, service: str, log_path: Path | None = None) -> None:
        self.service = service
        self.log_path = log_path
        if log_path is not None:
            message = f"{message}; see {_shown(log_path)}"
        super().__init__(message)


class NotInstalledError(StackError):
    """A program the service needs is missing and we could not (or may not) install it."""

    def __init__(self, service: str, program: str, hint: str) -> None:
        self.program = program
        self.hint = hint
        super().__init__(
            f"{service} needs `{program}`, which is not installed: {hint}", service=service
        )


class InstallError(StackError):
    """An install step (apt-get, mvn) ran and failed. ``output`` is its last lines."""

    def __init__(self, service: str, command: list[str], output: str) -> None:
        self.command = command
        self.output = output
        tail = " | ".join(line for line in output.strip().splitlines()[-3:] if line.strip())
        super().__init__(f"`{' '.join(command)}` failed: {tail or 'no output'}", service=service)


class PortInUseError(StackError):
    """The port is served by something that is not the expected service."""

    def __init__(self, service: str, port: int, role: str = "") -> None:
        self.port = port
        what = f"{service} {role}".strip()
        super().__init__(
            f"port {port} ({what}) is taken by a process that is not a {service} we can use; "
            "stop that process or configure another port (STREAMREC_* settings)",
            service=service,
        )


class ExitedError(StackError):
    """The process exited while we waited for it to become ready."""

    def __init__(self, service: str, returncode: int | None, log_path: Path) -> None:
        self.returncode = returncode
        code = "" if returncode is None else f" with code {returncode}"
        super().__init__(
            f"{service} exited{code} during startup", service=service, log_path=log_path
        )


class NotReadyError(StackError):
    """The process is running but did not answer its readiness probe in time."""

    def __init__(self, service: str, timeout_s: float, log_path: Path) -> None:
        self.timeout_s = timeout_s
        super().__init__(
            f"{service} did not become ready within {timeout_s:g} s",
            service=service,
            log_path=log_path,
        )


class ClusterError(StackError):
    """The nodes run, but together they are not a usable cluster (not formed, slots not
    covered, a node that is not in cluster mode)."""
