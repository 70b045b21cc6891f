"""Imported once by tests.launch's fork server: the entry points' imports, and what they print (IMPORT_OUTPUT)."""

from __future__ import annotations

import os
import sys
import tempfile

IMPORT_OUTPUT = ""

with tempfile.TemporaryFile() as captured:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
        import voc_dl.eval  # noqa: F401
        import voc_dl.export  # noqa: F401
        import voc_dl.predict  # noqa: F401
        import voc_dl.pseudo_label  # noqa: F401
        import voc_dl.report.__main__  # noqa: F401
        import voc_dl.train  # noqa: F401
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
    captured.seek(0)
    IMPORT_OUTPUT = captured.read().decode(errors="replace")
