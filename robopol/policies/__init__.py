"""Actors behind one contract (base.Actor); each module holds an actor and its config, whose
`build(spec)` makes it (configs register themselves by `type`, see robopol.registry)."""
