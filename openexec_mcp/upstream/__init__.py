"""Guarded upstream MCP servers (SPEC §11).

Modules: ``config`` (``[[upstreams]]``, no I/O; the settings import it), ``connection`` (one
supervised SDK-client connection), ``actions`` (upstream tools as guarded actions), ``manager``
(all upstreams of a server), ``hooks`` and ``relay`` (what flows back to the caller during a call),
``passthrough`` (resources, prompts, log level), ``announce`` (list changes to clients). This
package module imports none of them, so that reading the settings does not load the MCP client.
"""
