import re

from setuptools import find_packages
from setuptools import setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()

# One place for the version: the package's __version__.
with open("flask_session_bridge/__init__.py", encoding="utf-8") as f:
    version = re.search(r'^__version__ = "(.+)"$', f.read(), re.M).group(1)

setup(
    name="flask_session_bridge",
    version=version,
    license="BSD-3-Clause",
    description="One server-side session for Flask views and Flask-SocketIO handlers.",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    packages=find_packages(include=["flask_session_bridge", "flask_session_bridge.*"]),
    package_data={"flask_session_bridge": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=[
        "flask>=3.1",
        "flask-socketio>=5.3.7",
        "python-socketio>=5.11.2",
        "itsdangerous>=2.2",
        "blinker>=1.9",
        "click>=8.1",
    ],
    extras_require={
        # hiredis: redis-py parses replies in C when it is installed.
        "redis": ["redis>=5.0", "hiredis>=2"],
        # bench/: the anchor (Flask-Session), the load test's asyncio client,
        # and py-spy for bench/spy.py; hiredis as the [redis] extra ships it
        # (both sides of each comparison run with the same redis-py).
        "bench": ["redis>=5.0", "hiredis>=2", "flask-session>=0.8", "eventlet>=0.36",
                  "python-socketio[asyncio_client]>=5.11.2", "aiohttp", "py-spy"],
        # docs/: built by .ci/run with warnings as errors.
        "docs": ["sphinx>=7"],
        # Gunicorn 26 dropped the eventlet worker; 25 adds a control socket in ~/.gunicorn.
        "deploy": ["gunicorn>=23,<25"],
        "test": [
            "gunicorn>=23,<25",
            "pytest>=8",
            "pytest-timeout",
            "pytest-xdist",
            "redis>=5.0",
            "requests",
            "websocket-client",
            "python-socketio[client]>=5.11.2",
            "simple-websocket",
            "eventlet>=0.36",
            "gevent",
            "hypothesis",
            "aiohttp",
            "flask-login",
            "selenium>=4.11",
        ],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
    ],
)
