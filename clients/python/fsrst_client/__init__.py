"""Python client of fsrst-serve (see client.FsrstClient)."""

from fsrst_client.client import FsrstClient, FsrstError, from_proto, to_array, to_proto  # noqa: F401
