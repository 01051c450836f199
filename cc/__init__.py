"""The control center: a CLI that signs manifests and drives the gateway's control API.

The signing key never leaves this side (invariant 6): the gateway only stores what cc signed.
"""
