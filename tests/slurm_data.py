"""Answers of Slurm's tools recorded from the test cluster (Slurm 22.05,
``scripts/slurm-cluster.sh``), for the tests of the login node's views, report and dashboard
(no tests here): node2's 4 GPUs held by alice's ``big``, her ``more`` (3 GPUs) pending for
resources, bob's ``small`` on node1, and his ``claim``, a job that is no container.
"""

from __future__ import annotations

import textwrap

#: ``squeue --noheader --format SQUEUE_FORMAT``, as root (every user's).
SQUEUE = textwrap.dedent(
    """\
    2|more|PENDING||Resources|gres:gpu:3|0:00|alice|ds01-container
    3|small|RUNNING|node1|None|gres:gpu:1|0:38|bob|ds01-container
    1|big|RUNNING|node2|None|gres:gpu:4|0:59|alice|ds01-container
    4|claim|RUNNING|node1|None|gres:gpu:1|0:12|bob|
    """
)

#: ``scontrol show node -d`` (trimmed: the lines between are Slurm's, unread).
NODES = textwrap.dedent(
    """\
    NodeName=node1 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.07
       Gres=gpu:2
       GresDrain=N/A
       GresUsed=gpu:1
       NodeAddr=127.0.0.1 NodeHostName=localhost Port=36818 Version=22.05.8
       State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=2
    NodeName=node2 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.07
       Gres=gpu:4
       GresDrain=N/A
       GresUsed=gpu:4
       State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=4
    """
)
