"""The command line: ``python -m minidiff SUBCOMMAND ...``.

Every failure prints one line that says what went wrong and how to fix it, and exits non-zero;
``--debug`` shows the full traceback instead.
"""

import argparse
import sys

from minidiff.commands import (bench, control, convert, evaluate, generate, img2img, info, inpaint, outpaint,
                               schedule, train, verify)

# Subcommand name -> its module in minidiff/commands/. The order is the order ``--help`` shows.
COMMANDS = {
    "generate": generate,
    "img2img": img2img,
    "inpaint": inpaint,
    "outpaint": outpaint,
    "control": control,
    "info": info,
    "schedule": schedule,
    "convert": convert,
    "verify": verify,
    "train": train,
    "evaluate": evaluate,
    "bench": bench,
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line, ``error: ... (see PROG --help)``, not a usage dump."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class ShowDefaults(argparse.HelpFormatter):
    """Help that ends each option with its default, unless the help already says it or there is none to say."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or action.default is False or "default" in text \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser():
    parser = Parser(
        prog="minidiff" if sys.argv[0].endswith("/minidiff") else "python -m minidiff",  # the installed command
        description="minidiff: a small, readable Stable Diffusion that matches diffusers.",
        formatter_class=ShowDefaults,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=ShowDefaults)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user; the traceback only on request
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 1
    return int(result or 0)
