"""``python -m ds01.cli ARGS`` is ``ds01 ARGS``: how a Slurm job's step runs ds01 with the
interpreter it was installed in, whatever the node's PATH."""

from ds01.cli.entry import main

if __name__ == "__main__":
    main()
