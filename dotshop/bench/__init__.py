"""`dotshop bench checkout`: the checkout side by side with its floor and its limit on one
machine, in one run, with the same server settings (see runner.py for the plan)."""
