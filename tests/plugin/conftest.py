"""The editor-agnostic plug-in code (plugin/common/, GIMP's flow and parts) against a real server,
with a fake editor standing in only for the editor's pixels.
"""

from __future__ import annotations

import pytest

from plugin.common.catalog import Catalog, fetch_catalog
from plugin.common.client import Client
from tests import server_fixtures as fx


@pytest.fixture
def client(server: fx.LiveServer) -> Client:
    """A client of the module's own `server` fixture."""
    return Client(server.url)


@pytest.fixture
def catalog(client: Client) -> Catalog:
    return fetch_catalog(client)
