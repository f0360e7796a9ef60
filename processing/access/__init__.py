"""Access: who is calling (callers.py: API keys, App Service principals, addresses), the key
table (keys.py), and how often they may call (ratelimit.py). Plain Python over Table
Storage; the HTTP face (api/gate.py) applies it to requests."""
