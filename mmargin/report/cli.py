"""``mmargin report`` and ``mmargin compare`` behind the command line (:mod:`mmargin.cli`)."""

from __future__ import annotations

import argparse


def run_command(args: argparse.Namespace) -> int:
    """Write the page the sub-command asks for and say where (compare also prints its
    table). An unreadable run folder raises ``RunFolderError`` and a missing matplotlib
    an ``MmarginError`` (one line, status 2)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from mmargin.errors import MmarginError

        raise MmarginError(
            f"mmargin {args.command} draws its plots with matplotlib, which is not installed: "
            "pip install 'mmargin[report]'"
        ) from None
    if args.command == "report":
        from mmargin.report.page import write_report

        print(f"wrote {write_report(args.run, args.out)}")
        return 0
    from mmargin.report.compare import compare_table, write_compare

    print(compare_table(args.runs), end="")
    print(f"wrote {write_compare(args.runs, args.out)}")
    return 0
