"""Errors of the PACS adapters: one line each, naming the endpoint, never a secret or a patient.

Library exceptions (requests, pynetdicom) quote URLs with query strings (a PatientID filter) or
whole datasets; they are translated here so that only the endpoint's base address and the kind
of failure reach the console and the log.
"""

from __future__ import annotations


class PacsError(Exception):
    """A PACS operation failed; ``retriable`` says whether trying again later may succeed."""

    retriable = True


class PacsAuthError(PacsError):
    """The PACS refused our credentials (HTTP 401/403, DIMSE association rejected)."""

    retriable = False


class PacsUnavailable(PacsError):
    """The PACS could not be reached or did not answer in time (connection refused, timeout)."""


class PacsRejected(PacsError):
    """The PACS answered but refused the request (HTTP 4xx other than auth, DIMSE failure status)."""

    retriable = False


def http_error(status: int, base_url: str, what: str) -> PacsError:
    """The one-line error for an HTTP status from ``base_url`` (the query string is never shown)."""
    if status in (401, 403):
        return PacsAuthError(f"PACS refused the credentials (HTTP {status}) at {base_url}")
    if status in (408, 429) or status >= 500:
        return PacsUnavailable(f"PACS error (HTTP {status}) during {what} at {base_url}")
    return PacsRejected(f"PACS rejected {what} (HTTP {status}) at {base_url}")
