"""The adapter's error hierarchy: each error knows its HTTP status and whether a retry can help."""

from __future__ import annotations


class AdapterError(Exception):
    """Root of every error the adapter raises on purpose."""

    status = 500
    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(AdapterError):
    """The configuration is invalid; the service must not start."""


class Unauthorized(AdapterError):
    """The request did not carry an accepted shared secret."""

    status = 401


class UnsupportedMediaType(AdapterError):
    """The request body is not declared as JSON."""

    status = 415


class PayloadError(AdapterError):
    """The webhook body is not a valid Alertmanager payload."""

    status = 400


class BodyTimeout(AdapterError):
    """The request body did not arrive in time."""

    status = 408


class BodyTooLarge(AdapterError):
    """The body is over MAX_BODY_BYTES; `facts` are what could be learnt without keeping it (for the log)."""

    status = 413

    def __init__(self, message: str, facts: dict[str, object]):
        super().__init__(message)
        self.facts = facts


class UnknownRoute(AdapterError):
    """The URL names a route that is not configured."""

    status = 404


class DeliveryFailed(AdapterError):
    """Alert24 could not be reached or was overloaded; a later retry can succeed."""

    status = 503
    retryable = True


class DeliveryDeferred(DeliveryFailed):
    """Events were held back, not sent: Alert24 asked to wait (429, or kept failing) or the rate budget is spent.
    Alertmanager's resend carries them; what Alert24 accepted meanwhile is not sent again."""


class DeliveryRejected(AdapterError):
    """Alert24 refused an event for good; resending the same event will not help."""

    status = 422


class LedgerError(AdapterError):
    """The ledger of open incidents could not be read or written; paging goes on without it."""

    status = 503
    retryable = True


class AlertmanagerUnavailable(AdapterError):
    """An Alertmanager's API could not be asked, or answered something unusable: the pass is skipped."""

    status = 503
    retryable = True
