"""``edge-inspect listen``: the reference PLC-gateway subscriber (validates, detects gaps/restarts, resyncs)."""

from __future__ import annotations

import json
import signal
import sys

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "listen",
        help="subscribe to verdicts: validate, detect gaps and restarts, resync via the control channel",
        description="Reference subscriber for a PLC gateway. Prints one line per verdict (or JSON lines with "
        "--json) and a summary at exit. Gaps in msg_seq are filled through --control's 'last' command. "
        "With --state FILE (or --resume-from N) a restarted listen also fetches what the station published "
        "while it was down, and says what it could not fetch. Endpoints without a transport mean tcp://.",
    )
    p.add_argument("--connect", action="append", required=True, metavar="ENDPOINT",
                   help="publisher endpoint, e.g. tcp://192.168.1.20:5555 or 192.168.1.20:5555 "
                   "(repeat for several cameras)")
    p.add_argument("--control", metavar="ENDPOINT", help="control endpoint for resync, e.g. tcp://192.168.1.20:5556")
    p.add_argument("--topic", default="verdict.", help="topic prefix to subscribe to (default: verdict.)")
    p.add_argument("--json", action="store_true", help="write JSON lines (verdict bodies and events) instead of text")
    p.add_argument("--heartbeats", action="store_true", help="also print heartbeats")
    p.add_argument("--count", type=int, metavar="N", help="exit after N verdicts (exit 1 if --timeout comes first)")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    p.add_argument("--state", metavar="FILE",
                   help="keep where each camera stands (boot_id, next msg_seq) in FILE, written "
                   "atomically as verdicts arrive and at exit; at start, resume from it: what the station sent "
                   "meanwhile is fetched through --control (a crash may repeat the last half second: same "
                   "msg_seq)")
    p.add_argument("--resume-from", type=int, metavar="MSG_SEQ",
                   help="start at this msg_seq of the station's current boot (the summary's 'next'), "
                   "fetching what came before now through --control; one --connect only; overrides --state")
    p.add_argument("--curve-server-key", metavar="FILE", help="the server's public key file (server.key)")
    p.add_argument("--curve-client-key", metavar="FILE", help="this client's secret key file (NAME.key_secret)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..protocol.listener import (
        StateFile,
        VerdictListener,
        event_json,
        format_event,
        format_summary,
        resume_json,
        run_until,
    )
    from ..protocol.security import load_client_keys

    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be > 0")
    if args.resume_from is not None and args.resume_from < 0:
        raise ConfigError("--resume-from must be >= 0 (a msg_seq)")
    if args.resume_from is not None and len(args.connect) > 1:
        raise ConfigError("--resume-from is one camera's msg_seq: give one --connect, or use --state FILE")
    if bool(args.curve_server_key) != bool(args.curve_client_key):
        raise ConfigError("CURVE needs both --curve-server-key and --curve-client-key")
    keys = load_client_keys(args.curve_server_key, args.curve_client_key) if args.curve_server_key else None
    state = StateFile(args.state) if args.state else None
    resume = state.load() if state is not None and args.resume_from is None else None

    def emit(ev) -> None:
        if ev.kind == "heartbeat" and not args.heartbeats:
            return
        line = json.dumps(event_json(ev), separators=(",", ":")) if args.json else format_event(ev)
        print(line, flush=True)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    reached = True
    with VerdictListener(args.connect, topic=args.topic, control=args.control, keys=keys, resume=resume,
                         resume_from=args.resume_from) as listener:
        save = None
        if state is not None:
            try:
                state.save(listener.positions())  # fail now, not after an hour, if it cannot be written
            except OSError as exc:
                raise ConfigError(f"--state {args.state}: cannot write ({exc.strerror or exc})") from None

            def save() -> None:
                state.maybe_save(listener.positions())

        # SIGTERM ends the run like Ctrl-C, so the summary is printed either way.
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            reached = run_until(listener, args.count, args.timeout, emit, after_poll=save)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
        positions = listener.positions()
        if state is not None:
            try:
                state.save(positions)
            except OSError as exc:
                print(f"edge-inspect listen: state file {args.state} not written: {exc}", file=sys.stderr)
        if args.json:
            summary = {"event": "summary", **listener.stats.as_dict(), "resume": resume_json(positions)}
            print(json.dumps(summary), flush=True)
        else:
            print(format_summary(listener.stats, positions), flush=True)
    if not reached:
        print(f"edge-inspect listen: only {listener.stats.received + listener.stats.resynced} of {args.count} "
              f"verdicts within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0
