"""Python client of fsrst-serve: FsrstClient (client.py), CLI: python3 -m fsrst_client."""

from fsrst_client.client import (IDENTITY_METADATA_KEY, FsrstClient, FsrstError,  # noqa: F401
                                 from_proto, to_array, to_proto)

__all__ = ["FsrstClient", "FsrstError", "IDENTITY_METADATA_KEY", "from_proto", "to_array",
           "to_proto"]
