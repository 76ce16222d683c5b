"""NDIF's own server stack (ndif 0.1.2) for the tests: install.sh, stack.py, cpu_actor.py, fixture.py."""
