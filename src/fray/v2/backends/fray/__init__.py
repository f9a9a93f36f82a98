"""The fray backend of fray.v2: jobs, worker pools and actors on fray's own controller.

``create_cluster("fray?address=http://HOST:PORT&namespace=NS")`` builds a
:class:`~fray.v2.backends.fray.cluster.FrayCluster`. One module per job:

* ``cluster``: ``FrayCluster``, the :class:`fray.v2.cluster.Cluster`;
* ``jobs``: jobs through the controller's job RPCs (``FrayJob``);
* ``pool``: worker pools of fray actors (``FrayWorkerPool``);
* ``actors``: ``ActorServer`` instances as named fray actors, and finding them;
* ``resources``: ``ResourceSpec`` -> the wire's ``Requirements``.

These modules use fray's client (:mod:`fray.client`) and wire (:mod:`fray.wire`); nothing
else in fray.v2 does.
"""
