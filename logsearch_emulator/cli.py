"""`tap-rapid7-emulator`: run the emulator for people (loopback only).

Every `EmulatorOptions` field is a flag with dashes for underscores (`--polls-before-ready 0`,
`--no-next-is-async`, `--query-budget none`, `--no-budgets`, `--force-429-on-request 3,7`).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import types
import typing

from logsearch_emulator.options import EmulatorOptions
from logsearch_emulator.server import RunningEmulator

DEFAULT_PORT = 8765


def _converter(name: str, hint: object):
    """An argparse `type` for one option's annotation (None spelt `none`)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args else hint

    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        if name == "force_429_on_request":
            return tuple(int(part) for part in text.split(",") if part.strip())
        return base(text)  # type: ignore[operator]

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tap-rapid7-emulator",
        description="Local Rapid7 Log Search API emulator (listens on 127.0.0.1 only).",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 = any free port)",
    )
    hints = typing.get_type_hints(EmulatorOptions)
    for f in dataclasses.fields(EmulatorOptions):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                type=_converter(f.name, hint),
                default=f.default,
                metavar=f.name.upper(),
                help=f"default: {f.default}",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EmulatorOptions)}
    try:
        options = EmulatorOptions(**values)
        options.validate()
    except ValueError as exc:
        print(f"tap-rapid7-emulator: {exc}", file=sys.stderr)
        return 2
    emulator = RunningEmulator(options, port=args.port, host="127.0.0.1")
    stopping = threading.Event()

    def stop(signum: int, frame: types.FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever, which runs in this thread: do it elsewhere.
            threading.Thread(target=emulator.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"tap-rapid7-emulator listening on {emulator.base_url} "
        f"(logs: {len(emulator.log_ids)}, seed: {options.seed})",
        flush=True,
    )
    emulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
