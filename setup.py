"""The optional compiled batch path (fasp/datapath/_fastpath.c): built when a C compiler and OpenSSL's
headers (Debian: libssl-dev) are present; without them the install goes on and the engine seals in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fasp.datapath._fastpath",
            ["fasp/datapath/_fastpath.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
