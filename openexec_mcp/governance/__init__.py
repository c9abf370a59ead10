"""The governance service (SPEC §13): approvers decide in a browser; the execution server never holds the key.

``openexec-mcp governance serve`` runs apart from the execution servers it watches. It holds the
governance private key, signs approve / grant / reject decisions made by signed-in approvers in
a server-rendered console, submits them to the execution server (``POST /approvals``,
``POST /grants``) or queues them for servers that poll it (``GET /v1/decisions``), and notifies
approvers of new pending requests (webhook, email).
"""
