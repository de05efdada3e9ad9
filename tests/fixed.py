"""Constants every test shares: the fixed clock's time and the template CA's base URL.

Not a test module (conftest.py and the support modules import it).
"""

from __future__ import annotations

import datetime as dt

from jpki.pki import free_port

FIXED_NOW = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=dt.UTC)
#: The base URL the template CA's certificates name: a port free when the run started (nothing
#: listens there unless a test serves the CA on it).
TEMPLATE_BASE_URL = f"http://127.0.0.1:{free_port()}"
