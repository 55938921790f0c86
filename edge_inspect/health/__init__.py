"""Health: stage statistics and systemd notify/watchdog."""
