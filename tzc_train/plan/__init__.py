"""``tzc-train plan``: will this run fit the TPU, and how long will it take? Answered on any machine.

    config.py    PlanConfig (the run and the hardware to plan it for), the chips' figures, the plan's errors
    compile.py   the run's train step compiled ahead of time for a TPU topology described, not attached:
                 its memory per chip, XLA's FLOPs and the bytes its collectives produce
    report.py    plan(): every layout compiled, the cheapest that fits chosen, the hours projected and
                 judged against the session, and the report ``tzc-train plan`` prints

This package imports none of its modules itself: import the one you need.
"""
