"""Test helpers shipped for users' CI: cloud API emulators, tiny models built at test time, pytest fixtures.

Nothing here is imported by `import derm_cloud`; emulators import their protocol libraries when started.
"""
