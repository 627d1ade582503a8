"""Client-side errors of the wire client (additions under `CuemsgError`)."""

from __future__ import annotations

from cuemsg._exceptions import CuemsgError

__all__ = ["ExtensionNotAvailable", "MissingAPIKey"]


class MissingAPIKey(CuemsgError, ValueError):
    """No API key: pass `api_key=` or set the `CUEAPI_API_KEY` environment variable."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "no CueAPI key: pass api_key=... or set the CUEAPI_API_KEY environment variable "
            "(get a key with CueClient(...).register(email))"
        )


class ExtensionNotAvailable(CuemsgError):
    """The server does not list the extension a call needs (or extensions are off)."""

    def __init__(self, extension: str) -> None:
        super().__init__(
            f"the server does not serve the {extension!r} extension "
            "(or the client was made with use_extensions=False)"
        )
        self.extension = extension
