"""``python -m remote_steer.cli``: the same commands as ``remote-steer``."""

from remote_steer.cli import main

main()
