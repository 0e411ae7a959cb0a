"""Re-exec a scenario script with the client venv made by setup.sh when the
client library it needs is not importable, so `python3 script.py` works too."""

import importlib
import os
import sys


def bootstrap(module):
    """If `module` is not importable, re-exec with the venv's python (once)."""
    try:
        importlib.import_module(module)
        return
    except ImportError:
        pass
    if os.environ.get("_SWITCHYARD_REEXEC"):
        sys.stderr.write("%s not importable even inside the client venv; run tests/clients/setup.sh\n" % module)
        sys.exit(1)
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", "..", ".."))
    env = os.environ.get("SWITCHYARD_CLIENT_ENV") or os.path.join(repo, "target", "client-env")
    py = os.path.join(env, "py", "bin", "python3")
    if not os.path.exists(py):
        sys.stderr.write("%s is not installed and %s does not exist; run tests/clients/setup.sh\n" % (module, py))
        sys.exit(1)
    os.environ["_SWITCHYARD_REEXEC"] = "1"
    os.execv(py, [py] + sys.argv)
