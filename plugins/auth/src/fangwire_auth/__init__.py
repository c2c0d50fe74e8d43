"""fangwire's sign-in and second-factor plugins (OAuth/OIDC, TOTP, device pairing).

The master API-key provider ships with the core (``fangwire.defaults.auth_api_key``) so a
core-only install is never left without authentication.
"""
