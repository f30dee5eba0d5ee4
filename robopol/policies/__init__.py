"""Actors behind one contract (base.Actor); `factory.make_actor` builds them from a config."""
