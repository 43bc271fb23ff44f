__version__ = "0.2.0.dev0"

from .bridge import SessionBridge as SessionBridge
from .exceptions import SessionBridgeError as SessionBridgeError
from .exceptions import SessionLockTimeout as SessionLockTimeout
from .exceptions import SessionMissing as SessionMissing
from .exceptions import SessionValueError as SessionValueError
from .exceptions import StoreUnavailable as StoreUnavailable
from .login import socket_login_required as socket_login_required
from .session import BridgeSession as BridgeSession
from .stores import MemoryStore as MemoryStore
from .stores import Record as Record
from .stores import Store as Store
from .stores.redis import RedisStore as RedisStore
from .stores.sqlite import SQLiteStore as SQLiteStore
from .users import SessionInfo as SessionInfo
