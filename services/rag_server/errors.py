"""Errors domain code raises; the API maps each to one HTTP status (api/errors.py).

Domain code never imports from `api/`: it says what went wrong, the API says how that looks over HTTP.
"""


class NotFoundError(Exception):
    """A domain object the request names does not exist (404 over HTTP)."""

    # A stable, machine-readable name of the case (the API's `code` beside `detail`): clients branch on
    # it, never on the sentence. None: the status says enough.
    code: str | None = None


class CollectionNotFoundError(NotFoundError):
    """A collection the request names does not exist, or is not one the key may read (renamed or deleted
    elsewhere: the web app follows the selected one by this code)."""

    code = "collection_not_found"


class ResponseNotFoundError(NotFoundError):
    """A stored response (/v1/responses) that does not exist, was deleted or pruned, was not stored
    (`store: false`), or is not one the key may read. `param`: the request field that named it."""

    code = "response_not_found"

    def __init__(self, response_id: str, param: str | None = None) -> None:
        what = "Previous response" if param == "previous_response_id" else "Response"
        super().__init__(f"{what} with id {response_id[:100]!r} not found.")
        self.param = param


class PreviousResponseNotFoundError(ResponseNotFoundError):
    """`previous_response_id` names no stored response this key reaches: a 400 with OpenAI's own code,
    `previous_response_not_found` (agents such as Codex recover on it by resending the conversation)."""

    code = "previous_response_not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id, "previous_response_id")


class InvalidInputError(Exception):
    """The request is well-formed but its content is unusable, e.g. an upload without files (422).
    `param`: the request field at fault, when one is (the OpenAI-compatible API's `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class TooLargeError(Exception):
    """The request or one of its files is over a configured size or count limit (413)."""


class BusyError(Exception):
    """The server holds as much as it may of a kind of work right now (503, Retry-After): the request is
    fine, a retry shortly will be taken."""


class UnsupportedTypeError(Exception):
    """A file type the parsers do not handle (415)."""


class ConflictError(Exception):
    """The request conflicts with what is stored, e.g. a duplicate name or a non-empty collection (409)."""

    code: str | None = None  # as NotFoundError's


class DocumentBusyError(ConflictError):
    """A document's rows stayed held by a write under way (its chunks being written) past the wait a
    request allows itself (ingestion/locks.py): try again later, nothing is wrong with the request."""

    code = "document_busy"


class SelectionChangedError(ConflictError):
    """The documents a selection names, once locked, are not as many as the caller confirmed (its
    `expected_count`): some were added, changed or deleted meanwhile. Nothing was changed; show the
    selection again."""

    code = "selection_changed"


class UnauthenticatedError(Exception):
    """No API key, or one that is unknown or revoked (401 with `WWW-Authenticate: Bearer`)."""


class ForbiddenError(Exception):
    """The key's role may not do this (403). Objects outside the key's collections are a NotFoundError."""
