"""A test stand-in for Marin's ``iris`` package (see ``tests/iris_standin/README.md``)."""

STANDIN = True
