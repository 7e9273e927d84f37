"""Service: the gRPC server and servicers, authorization, certificates, metrics."""
