"""Where the tests find Meltano, and the skip that only a bare developer run may take.

scripts/test.sh installs Meltano into .tools/meltano and sets MELTANO_BIN; under CI or that
script a missing Meltano fails the tests that need it instead of hiding them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MELTANO = Path(os.environ.get("MELTANO_BIN", REPO / ".tools" / "meltano" / "bin" / "meltano"))
MELTANO_REQUIRED = bool(os.environ.get("CI") or "MELTANO_BIN" in os.environ)

requires_meltano = pytest.mark.skipif(
    not MELTANO.exists() and not MELTANO_REQUIRED,
    reason=f"Meltano not installed at {MELTANO} (scripts/test.sh installs it; or set MELTANO_BIN)",
)
