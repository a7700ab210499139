"""Errors of generation, as a person reading `status.errorMessage` needs them."""

from __future__ import annotations


class GenerationError(Exception):
    """The spec cannot be rendered as it is: fix the spec or what it refers to.

    `message` says which source, which path or key, and what was wrong. `permanent`
    tells the handler whether retrying without a change can help.
    """

    permanent: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SourceUnavailable(GenerationError):
    """Something the spec refers to is not there yet or not reachable: retrying may heal it
    (a ConfigMap not created yet, a template host down or answering 5xx)."""

    permanent = False
