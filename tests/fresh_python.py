"""Run code in a fresh Python and say which modules it imported: import-cost tests share it."""
from __future__ import annotations

import subprocess
import sys


def modules_imported(code: str, candidates) -> list[str]:
    """Those of ``candidates`` (top-level module names) in ``sys.modules`` after ``code`` ran in a
    new interpreter; raises with its stderr when ``code`` fails."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {list(candidates)!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()
