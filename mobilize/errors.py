"""Errors that map to the CLI's exit codes.

0 done; 1 a check failed (parity, latency budget); 2 bad input; 3 a tool failed inside.
Raise these from the API; the CLI turns them into one line and an exit code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TOOL_FAILED = 3


class MobilizeError(Exception):
    """Base class: a message for a person, and the exit code the CLI uses."""

    exit_code = EXIT_TOOL_FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class BadInput(MobilizeError):
    """The user gave something we cannot use: a missing file, a wrong shape, an unknown name."""

    exit_code = EXIT_BAD_INPUT


class Unsupported(BadInput):
    """The model uses something a target cannot express (an op, a dtype, a batch size)."""

    def __init__(self, message: str, target: str | None = None, op: str | None = None, hint=None):
        super().__init__(message, hint)
        self.target = target
        self.op = op


class ToolFailed(MobilizeError):
    """A converter or runtime broke inside. Rerun with --debug for its traceback."""

    exit_code = EXIT_TOOL_FAILED


class CheckFailed(MobilizeError):
    """A measurement did not meet its bar: parity beyond tolerance, latency over budget."""

    exit_code = EXIT_CHECK_FAILED


class MissingDependency(BadInput):
    """An optional heavy dependency is not installed."""

    def __init__(self, package: str, purpose: str, extra: str | None = None):
        how = f'pip install "mobilize[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the Python package '{package}'", f"install it with: {how}")
        self.package = package
