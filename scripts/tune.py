"""The script to hand to ``ray submit``: ``distmtl tune`` on the cluster it runs in.

    ray submit cluster/cluster.yaml scripts/tune.py -- --space /home/ray/distmtl/search_spaces/default.yaml

It takes the same arguments as ``distmtl tune``. It joins the Ray cluster that ``ray start``
recorded on this machine (or ``--address`` / ``$RAY_ADDRESS``), otherwise it starts a local one.
``ray submit`` copies only this file to the head node, so distmtl must already be installed there
(``cluster/cluster.yaml`` does that in its setup commands).
"""

import sys

from distmtl.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["tune", *sys.argv[1:]]))
