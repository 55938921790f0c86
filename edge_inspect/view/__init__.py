"""The live web view (run --view) and the local window (run --show): see view.server, view.live, view.window."""
