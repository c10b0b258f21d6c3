"""The errors of image loading, and what they name: the input as the caller gave it."""

from __future__ import annotations

import errno
import os
from typing import Optional, Union

#: A URL (http/https), a local file path, or a file:// URI (RFC 8089) naming a local file.
Uri = Union[str, "os.PathLike[str]"]


class ImageLoadError(ValueError):
    """An input could not be turned into an image; the message names it and says what to do.

    ``uri`` holds the input as it was given.
    """

    def __init__(self, message: str, uri: Optional[Uri] = None) -> None:
        super().__init__(message)
        self.uri = uri


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """A local path that does not exist (catch it as ``ImageLoadError`` or ``FileNotFoundError``)."""

    def __init__(self, message: str, uri: Optional[Uri] = None, path: Optional[str] = None) -> None:
        super().__init__(message, uri)
        self.errno = errno.ENOENT
        self.filename = path

    def __str__(self) -> str:  # the message, not OSError's "[Errno 2] ..." form
        return str(self.args[0])
