"""Fixtures for the Outrider integration suite.

Run from the repository root:  python3 -m pytest -q Tests/integration
The binary comes from $OUTRIDER_BIN, default <repo>/.build/release/outrider. A missing
binary fails every test loudly (CI must never skip silently).
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import (  # noqa: E402
    REPO, Proxy, Upstream, free_port, make_config,
)


@pytest.fixture(scope="session")
def outrider_bin():
    path = Path(os.environ.get("OUTRIDER_BIN") or REPO / ".build" / "release" / "outrider")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail("outrider binary not found or not executable at %s: build it with "
                    "`swift build -c release --static-swift-stdlib --product outrider` "
                    "or set OUTRIDER_BIN" % path, pytrace=False)
    return path


@pytest.fixture
def upstream():
    """Factory: upstream("A") starts deploy/demo/upstream.py on a free port."""
    started = []

    def make(name="A"):
        u = Upstream(name)
        started.append(u)
        return u

    yield make
    for u in started:
        u.stop()


@pytest.fixture
def proxy(outrider_bin, tmp_path):
    """Factory: proxy(config=None, *, upstream=..., layout="plain"|"configmap", args=(), env=None,
    wait=True, **sections). With config=None a config is built from `upstream` (an Upstream or
    "host:port") plus top-level `sections` (timeouts=..., limits=...). A dict config is written as
    YAML; a str is written verbatim (then pass listen_port/admin_port)."""
    started = []

    def make(config=None, *, upstream=None, layout="plain", args=(), env=None, wait=True,
             listen_port=None, admin_port=None, **sections):
        if config is None:
            addr = upstream.addr if hasattr(upstream, "addr") else upstream
            assert addr, "proxy(): pass config or upstream"
            config = make_config(listen_port or free_port(), admin_port or free_port(), addr, **sections)
        workdir = tmp_path / ("proxy%d" % len(started))
        p = Proxy(outrider_bin, workdir, config, layout=layout, args=args, env=env,
                  listen_port=listen_port, admin_port=admin_port)
        started.append(p)
        if wait:
            p.wait_ready(20.0)
        return p

    yield make
    for p in started:
        alive = p.alive()
        p.stop()
        # Shown by pytest only when the test failed.
        print("outrider pid %d (%s at teardown)\n%s" % (p.pid, "alive" if alive else "exited", p.diag()))
