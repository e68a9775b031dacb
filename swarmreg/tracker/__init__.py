"""The tracker role: who has which blob, told over a websocket channel of msgpack frames."""
