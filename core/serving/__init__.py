"""The HTTP serving skeleton both services mount: access, limits, input checks, metrics, and the
guarded uvicorn server.

Owns: `app` (create_service, ServiceLimits, the Guard middleware) and `server` (serve, with
deadlines and header limits). Knows no model and no route of a solution.
May import: core.foundation (and anything below the top floor). A sibling of export, mlops, plan.
"""
