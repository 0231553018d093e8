"""The HTTP plumbing every capability's routes stand on, below the capabilities:
declaring and enforcing a permission (``auth``), the caller context and the services
a route reaches (``context``), the blocking pool, errors as responses, middleware, and
streamed uploads. ``server/`` only assembles the app from these and the capabilities."""
