"""``edge-inspect check [--camera URI]``: what this machine's OpenCV and Aravis can do, and whether a
camera URI works here (opens it, reads frames, reports resolution and frame rate).

Exit 0 when the camera delivered (or, hardware-triggered, opened); otherwise one error line and the
error's exit code (1 camera, 2 bad URI/config, 3 missing library), never an abort: a missing V4L2 device
is refused before OpenCV is asked, and the camera is closed (its grabber thread joined) before we exit.
"""

from __future__ import annotations

import threading
import time

from ..errors import CameraError, EdgeInspectError


def register(subparsers) -> None:
    p = subparsers.add_parser("check", help="check the camera backends here and whether a camera URI works",
                              description="Print OpenCV's video backends (GStreamer, FFmpeg, V4L2) and whether "
                              "Aravis (GigE Vision) is available; with --camera, open that URI, read frames and "
                              "report resolution and frame rate. GigE cameras are opened by IP, never discovered.")
    p.add_argument("--camera", metavar="URI", help="camera URI to try, e.g. rtsp://host/stream, gige://IP, csi://0")
    p.add_argument("--config", metavar="TOML", help="config file whose [camera] section applies (trigger, size, ...)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="give up after S seconds (default 10)")
    p.add_argument("--frames", type=int, default=30, metavar="N", help="frames to read for the frame rate (default 30)")
    p.set_defaults(func=check)


def environment_lines() -> list[str]:
    from ..camera.gige import aravis_version, load_aravis
    from ..camera.opencv_source import is_jetson, opencv_video_backends

    def yn(flag) -> str:
        return "yes" if flag else "no"

    cv = opencv_video_backends()
    lines = [f"OpenCV {cv['version']}: GStreamer {yn(cv['gstreamer'])}, FFmpeg {yn(cv['ffmpeg'])}, "
             f"V4L2 {yn(cv['v4l2'])}; Jetson: {yn(is_jetson())}"]
    if is_jetson() and not cv["gstreamer"]:
        lines.append("  warning: this OpenCV lacks GStreamer; csi:// and hardware RTSP decoding need JetPack's "
                     "system OpenCV (pip uninstall opencv-python opencv-python-headless)")
    try:
        load_aravis()
        lines.append(f"Aravis (GObject introspection): available, version {aravis_version()}")
    except EdgeInspectError as exc:
        lines.append(f"Aravis (GObject introspection): not available ({exc})")
    return lines


def check(args) -> int:
    for line in environment_lines():
        print(line)
    if not args.camera:
        return 0
    from ..camera.uri import make_source, parse_uri
    from ..settings import load_settings

    settings = load_settings(args.config, {"camera": {"uri": args.camera}}).camera
    parsed = parse_uri(settings.uri)
    source = make_source(parsed, settings)  # raw source: errors come straight through, no reconnecting
    print(f"camera {parsed.safe}: {parsed.scheme}, trigger {source.trigger_mode}")
    result = _probe(source, args.frames, args.timeout)
    if "error" in result:
        raise result["error"]
    if "timeout" in result:
        raise CameraError(f"camera {parsed.safe}: {result['timeout']}")
    desc = result.get("describe", {})
    if result.get("frames", 0) == 0:
        print(f"camera {parsed.safe}: opened ({desc.get('backend', '?')}) in {result['t_open']:.2f} s; "
              f"no hardware trigger within {args.timeout:.0f} s (frames come when the trigger line fires)")
        return 0
    img = result["image"]
    h, w = img.shape[:2]
    kind = f"{'mono' if img.ndim == 2 else 'BGR'} {img.dtype}"
    fps = result.get("fps")
    print(f"camera {parsed.safe}: OK via {desc.get('backend', '?')}: {w}x{h} {kind}, "
          f"opened in {result['t_open']:.2f} s, first frame after {result['t_first']:.2f} s, "
          + (f"{fps:.1f} fps measured over {result['frames']} frames" if fps else f"{result['frames']} frame(s)")
          + (f" (camera reports {desc['fps']:.1f} fps)" if desc.get("fps") else ""))
    return 0


def _probe(source, n_frames: int, timeout: float) -> dict:
    """Open ``source`` and read up to ``n_frames`` in a helper thread, bounded by ``timeout`` seconds."""
    result: dict = {}
    done = threading.Event()

    def work() -> None:
        from ..camera.base import EndOfStream

        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            source.open()
            result["t_open"] = time.monotonic() - t0
            result["describe"] = source.describe()
            times = []
            while len(times) < max(1, n_frames) and time.monotonic() < deadline:
                if source.trigger_mode == "software":
                    source.trigger(f"check-{len(times)}")
                try:
                    frame = source.read(min(1.0, max(0.01, deadline - time.monotonic())))
                except EndOfStream:
                    break
                if frame is None:
                    continue
                times.append(time.monotonic())
                if len(times) == 1:
                    result["t_first"] = times[0] - t0
                    result["image"] = frame.image
                    if source.trigger_mode == "hardware":
                        break
            result["frames"] = len(times)
            if len(times) >= 3:
                result["fps"] = (len(times) - 1) / (times[-1] - times[0])
            if not times and source.trigger_mode != "hardware":
                result["timeout"] = f"opened but no frame within {timeout:.0f} s"
        except EdgeInspectError as exc:
            result["error"] = exc
        except Exception as exc:  # noqa: BLE001 - a driver error: report it as one line
            result["error"] = CameraError(f"{type(exc).__name__}: {exc}")
        finally:
            try:
                source.close()
            except Exception:  # noqa: BLE001 - closing after a driver fault may fail too; the first error is reported
                pass
            done.set()

    threading.Thread(target=work, name="check-camera", daemon=True).start()
    if not done.wait(timeout + 5.0):
        return {"timeout": f"no answer within {timeout:.0f} s (opening hangs)"}
    return result
