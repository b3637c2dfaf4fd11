"""On-call rosters: the pure resolution (`resolution.holders`, wall-clock shifts in the
facility's timezone, overrides that replace), who may hold a level (`rules`), managing shifts
and overrides (`use_cases`), and who is on call now (`on_call`: the board, and the rosters the
escalation sweeps page from)."""
