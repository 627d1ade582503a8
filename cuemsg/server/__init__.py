"""The embedded CueAPI-compatible server (`cuemsg serve`)."""

from cuemsg.server.app import create_app, open_storage
from cuemsg.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "open_storage"]
