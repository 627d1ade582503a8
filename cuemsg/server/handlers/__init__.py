"""The route handlers, one module per resource; `cuemsg.server.routes` wires them."""
