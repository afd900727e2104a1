# Until tests/conftest.py loads them for everyone (pytest_plugins = ["tests.support.servers"]).
from tests.support.servers import fasp_server, fasp_server_module, openssh_server  # noqa: F401
