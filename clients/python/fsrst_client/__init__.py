"""Python client of fsrst-serve: FsrstClient (client.py), CLI: python3 -m fsrst_client."""

from fsrst_client.client import (IDENTITY_METADATA_KEY, Enhanced, FsrstClient,  # noqa: F401
                                 FsrstError, from_proto, to_array, to_proto)

__all__ = ["Enhanced", "FsrstClient", "FsrstError", "IDENTITY_METADATA_KEY", "from_proto",
           "to_array", "to_proto"]
