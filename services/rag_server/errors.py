"""Errors domain code raises; the API maps them to HTTP statuses (api/errors.py)."""


class NotFoundError(Exception):
    """A domain object the request names does not exist (404 over HTTP)."""


class ConflictError(Exception):
    """The request conflicts with the current state (409 over HTTP)."""
