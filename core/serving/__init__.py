"""The HTTP serving skeleton both services mount: access, limits, input checks, metrics, and the
guarded uvicorn server.

Owns: `app` (create_service, ServiceLimits, Access, the Guard middleware), `server` (serve, with
deadlines and header limits) and `flags` (the --host/--port/--public flags every serving command
shares; standard library only, so the console entry can import it). Knows no model and no route
of a solution.
May import: core.foundation (and anything below the top floor). A sibling of export, mlops, plan.
"""
