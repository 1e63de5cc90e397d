"""The HTTP edge: routes, sessions, CSRF, security headers, server-sent events."""
