"""What tests and benchmarks (bench/) share to set up what they measure or check: one
module a concern.

* ``ports``: loopback (the only network used), free ports, the loopback guard.
* ``env``: environments for child processes (``clean_env``; ``cli_env`` for the service).
* ``processes``: ``acme-delegate serve`` and its CLI as child processes; any other command
  in a process group of its own (``ToolCommand``).
* ``standin``: the DigitalOcean stand-in in a process of its own.
* ``databases``: fresh SQLite and PostgreSQL databases per run (and per pytest-xdist
  worker).
* ``seed``: DNS-01 values, and accounts and live values in bulk.
* ``tools``: locating external programs, with install lines.
* ``tls``: a test CA, CSRs, checking issued certificates.
* ``pebble``: Pebble, the ACME test server.
* ``acme``: the ACME clients (lego, pylego, certbot) and their venvs
  (``python3 -m tests.support.acme install-venvs``).

``tools``, ``tls``, ``pebble``, ``acme``, ``processes``, ``env`` and ``ports`` import only
the standard library at load time: CI runs the ``acme`` CLI before the project's virtual
environment exists.
"""
