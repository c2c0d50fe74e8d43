"""fangwire's secrets layer: where secrets are stored and how they are kept out of sight.

`choose_backend` picks a keyring backend (the system keyring, or fangwire's own
`EncryptedFileKeyring` keyed by `load_master_key`); `SecretStore` is the asynchronous facade
over it, returning `Secret` values and registering every value with the process `Redactor`.
"""

from fangwire.secrets.backend import ChosenBackend, choose_backend
from fangwire.secrets.errors import SecretStoreError
from fangwire.secrets.filekeyring import EncryptedFileKeyring
from fangwire.secrets.masterkey import load_master_key
from fangwire.secrets.memory import MemoryKeyring
from fangwire.secrets.store import SecretStore
from fangwire.secrets.value import Secret

__all__ = [
    "ChosenBackend",
    "EncryptedFileKeyring",
    "MemoryKeyring",
    "Secret",
    "SecretStore",
    "SecretStoreError",
    "choose_backend",
    "load_master_key",
]
