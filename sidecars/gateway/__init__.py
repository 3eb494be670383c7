"""The trader gateway sidecar: REST API, websocket ``/ws`` and the Mini App mount.

``sidecars.gateway.actor`` holds ``GatewayActor`` and ``GatewayConfig`` (the registry imports
them from there); ``auth`` the credentials; ``ws`` documents the websocket protocol. Nothing is
re-exported here so that ``levibot keys`` can import ``auth`` without the web server.
"""
