"""advsal's own error types: every failure a user can cause and fix is one of these.

The command line catches ``AdvsalError`` only (one line, exit status 2); anything else is a bug and keeps its
traceback. ``ConfigError`` and the input errors also derive from ``ValueError`` so library callers that already
catch ``ValueError`` keep working.
"""

from __future__ import annotations


class AdvsalError(Exception):
    """A user-caused failure; its message names the problem and the fix."""


class InputError(AdvsalError, ValueError):
    """An argument of a library call is invalid: wrong shape, range, name or type of a value the caller passed."""


class ConfigError(AdvsalError, ValueError):
    """A study configuration (or command-line option) has a wrong name, type or value."""


class StoreError(AdvsalError):
    """A run directory cannot be used (bad name, held by another run, unreadable results)."""


class RunBusyError(StoreError):
    """Another process holds the run directory's lock."""


class DeviceError(AdvsalError, ValueError):
    """The requested device does not exist on this machine."""


class ModelSpecError(AdvsalError, ValueError):
    """A user model (``--model module:factory`` or ``file.py:factory``) cannot be built or is not a classifier."""


__all__ = ["AdvsalError", "ConfigError", "DeviceError", "InputError", "ModelSpecError", "RunBusyError",
           "StoreError"]
