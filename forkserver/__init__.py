"""forkserver: a pre-fork HTTP/1.1 static file server.

Owns the package version and nothing else; importing the package must stay cheap
because every worker and the ``-s`` signal sender import it.
"""

__version__ = "0.1.0"
SERVER_NAME = "forkserver"
