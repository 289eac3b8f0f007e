"""gRPC between nodes: kayit.proto, its generated code (committed), servicer and clients."""
