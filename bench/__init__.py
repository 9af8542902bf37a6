"""Benchmarks of acme-delegate, all against the DigitalOcean stand-in on loopback.

Each module runs with one command and writes ``bench/results/<name>.json`` (plus a PNG
when matplotlib is installed):

* ``python -m bench.overhead``: ``/update`` latency and throughput, SQLite and PostgreSQL
* ``python -m bench.auth``: key verification against bcrypt at cost 10
* ``python -m bench.certs``: DigitalOcean calls and wall time per certificate, against
  lego's and certbot's own DigitalOcean integrations
* ``python -m bench.burst``: 1,000 credentials updating at once under the request budget
* ``python -m bench.scale``: 100,000 credentials: latency, memory, reconcile time
* ``python -m bench.plot``: redraw every PNG from the JSON results

See bench/README.md for the commands, the results and what they mean.
"""
