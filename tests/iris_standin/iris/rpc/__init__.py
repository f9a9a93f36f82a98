"""Wire types (Iris generates them from protobuf; here they are plain Python)."""
