"""Local emulators of each cloud API on 127.0.0.1, driven through the real SDKs.

Each emulator module imports only the standard library (plus grpc for Vertex gRPC) and hosts a real model
through `derm_cloud.serving` or answers scripted responses. See `base.py` for fault injection.
"""
