"""fray.v2 backends: ``local`` (this machine), ``ray`` (imports Ray) and ``fray`` (fray's own
controller and workers); each is loaded on demand by :func:`fray.v2.create_cluster`."""
