"""ZeroMQ verdict protocol: message types, publisher, control channel, listener, CURVE security."""
