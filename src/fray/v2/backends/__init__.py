"""fray.v2 backends: ``local`` (this machine) and ``ray`` (imports Ray; loaded on demand)."""
