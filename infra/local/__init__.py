"""The local two-region setup: a primary PostgreSQL and a streaming replica (postgres.py,
replica.py), a delay proxy standing for the distance between regions (delay_proxy.py), the
processes of each region wired to them (regions.py), and the failover and latency drills
(drill.py) that `dotshop drill` runs."""
