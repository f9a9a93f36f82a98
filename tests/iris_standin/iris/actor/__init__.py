"""Actors: ``iris.actor.server``, ``iris.actor.client``, ``iris.actor.resolver``."""
