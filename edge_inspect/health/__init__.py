"""Health: stage statistics, the drift watch on good-part scores, and systemd notify/watchdog."""
