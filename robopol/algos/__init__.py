"""One update rule per module: its config dataclass and its Algorithm subclass, which register
themselves by name (robopol.registry); base.py holds the contract, on_policy.py / off_policy.py the
updates their families share."""
